"""Writing report files without ever overwriting what a user already has, and never with a non-finite number."""

import json
import math
from pathlib import Path

from tokenbounds.errors import UserError


def check_writable(path: str | Path | None, force: bool = False) -> None:
    """Fail before any work is done if the report could not be written."""
    if path is None:
        return
    path = Path(path)
    if path.exists() and not force:
        raise UserError(f"{path} already exists; pass --force to overwrite it")
    if path.exists() and path.is_dir():
        raise UserError(f"{path} is a directory, not a file")
    if not path.parent.is_dir():
        raise UserError(f"the directory of {path} does not exist")


def nonfinite_fields(value, path: str = "report") -> list[str]:
    """Paths like report.results[3].bound of every NaN or +-inf float in a JSON-like value."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{path} = {value}"]
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in nonfinite_fields(item, f"{path}.{key}")]
    if isinstance(value, (list, tuple)):
        return [p for i, item in enumerate(value) for p in nonfinite_fields(item, f"{path}[{i}]")]
    return []


def check_finite(report: dict) -> None:
    """Refuse a report holding NaN or +-inf: JSON has no such numbers, and a NaN bound is no bound.

    Inputs that could produce one (NaN logits, ids >= V) are refused upstream, so reaching this is a bug in
    tokenbounds; it is still one line, naming the field, rather than a file with "NaN" or "Infinity" in it.
    """
    bad = nonfinite_fields(report)
    if bad:
        raise UserError(
            f"refusing to report a non-finite number ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): "
            "this is a bug in tokenbounds, please report it"
        )


def write_json(path: str | Path, report: dict) -> None:
    check_finite(report)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    # allow_nan=False: Python's json would otherwise write NaN / Infinity, which is not JSON
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
