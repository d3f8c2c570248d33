#!/usr/bin/env bash
# Create a virtual environment with the pinned CPU torch first, then tokenbounds and its extras; the torch pin is
# passed as a constraint too, so no later requirement can swap in a multi-GB CUDA build.
#   bash scripts/setup.sh                      .venv with the test tools (the README's commands)
#   bash scripts/setup.sh .venv-packed test,packed    + optimum and gptqmodel, for tests/test_packed_checkpoints.py
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
extras="${2:-test}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pin="$(mktemp)"
trap 'rm -f "$pin"' EXIT
echo "torch==2.13.0" > "$pin"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0"
# BUILD_CUDA_EXT=0: gptqmodel (extra "packed") builds from source; its CPU kernels need no CUDA toolchain.
BUILD_CUDA_EXT=0 "$venv/bin/python" -m pip install -q --disable-pip-version-check -c "$pin" -e ".[$extras]"
