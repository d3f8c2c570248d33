"""Which files a size measurement compresses: a model's priced files (from its backend), or files as given.

A model path (a directory, or a .gguf file) is expanded by the backend registry (`models.registry.priced_files`):
each backend lists the files that describe its model. Any other file is priced exactly as given.
"""

from collections.abc import Sequence
from pathlib import Path

from tokenbounds.errors import UserError
from tokenbounds.models.registry import priced_files


def checkpoint_files(path: str | Path) -> list[Path]:
    """The files that describe the model at `path` (what `bound --checkpoint-size` and `size` price).

    A .gguf file or a model directory -> its backend's priced files (see each backend's module). Any other file ->
    [it]. UserError for a missing path, an empty file, or a directory no backend prices.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if path.is_file() and path.suffix != ".gguf":
        if path.stat().st_size == 0:
            raise UserError(f"{path} is empty")
        return [path]
    return priced_files(path)


def resolve_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand each path with `checkpoint_files`. Rejects clashing base names (tar members would collide)."""
    if not paths:
        raise UserError("no checkpoint path given")
    files = [f for p in paths for f in checkpoint_files(p)]
    seen: dict[str, Path] = {}
    for f in files:
        if f.name in seen:
            raise UserError(f"two files named {f.name} ({seen[f.name]} and {f}): tar members would clash")
        seen[f.name] = f
    return files
