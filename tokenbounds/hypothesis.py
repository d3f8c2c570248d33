"""`load_any`: the old entry point from a model path to a `LogitModel`, kept for callers not yet switched.

What a path is and how it loads is decided by the backend registry (`tokenbounds.models.registry.open_model`); this
module only maps the old positional signature onto it. The integrator switches pipeline.py to `open_model` and deletes
this file.
"""

from pathlib import Path

from tokenbounds.models.base import LogitModel
from tokenbounds.models.registry import open_model


def load_any(
    path: str | Path,
    dtype: str = "float32",
    device: str = "cpu",
    verified: tuple[dict, dict] | None = None,
    quip_sharp: str | Path | None = None,
    quip_python: str | None = None,
) -> LogitModel:
    """`open_model(path, dtype, device, verified=..., quip_sharp=..., quip_python=...)`."""
    return open_model(path, dtype, device, verified=verified, quip_sharp=quip_sharp, quip_python=quip_python)
