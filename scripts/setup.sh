#!/usr/bin/env bash
# Create .venv with the pinned CPU torch first (so nothing pulls a CUDA build), then tokenbounds and its tests.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
