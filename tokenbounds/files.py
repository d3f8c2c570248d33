"""Small file helpers shared by the data and model loaders."""

import hashlib
import json
from pathlib import Path

from tokenbounds.errors import UserError


def holds_something(path: str | Path) -> bool:
    """True when `path` exists and is not an empty directory: an output there would overwrite what a user has."""
    path = Path(path)
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def file_sha256(path: str | Path, chunk: int = 1 << 24, bar=None) -> str:
    """sha256 hex digest of a file, read in chunks (never whole); `bar` (a tqdm in bytes) is advanced as it reads."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            if bar is not None:
                bar.update(len(block))
    return digest.hexdigest()


def read_json(path: str | Path):
    """The parsed JSON of a file a user gave us; one-line UserError when it is not valid JSON (or not UTF-8)."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err})") from None
