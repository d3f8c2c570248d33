"""Writing report files without ever overwriting what a user already has."""

import json
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


def write_json(path: str | Path, report: dict) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
