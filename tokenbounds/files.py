"""Small file helpers shared by the data and model loaders."""

import hashlib
from pathlib import Path


def file_sha256(path: str | Path, chunk: int = 1 << 24) -> str:
    """sha256 hex digest of a file, read in chunks (never whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
