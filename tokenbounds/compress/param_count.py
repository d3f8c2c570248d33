"""How many parameters checkpoint files hold, read from their headers only (no tensor data is read).

safetensors: an 8-byte little-endian header length, then a JSON header of name -> dtype, shape, offsets. GGUF: the
tensor info table `gguf.GGUFReader` parses (the data is memory-mapped, not read). Packed formats (GPTQ, AWQ, QuIP#)
store several weights per integer: `architecture.dense_parameter_count` counts the weights they stand for.
"""

import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path

from tokenbounds.errors import UserError


def count_parameters(files: Sequence[str | Path]) -> int | None:
    """Number of scalars in the weight files, read from headers only (safetensors JSON header, GGUF tensor info).

    JSON config files count 0. Returns None when a weights file is of another format (e.g. pytorch .bin).
    """
    total = 0
    for f in map(Path, files):
        if f.suffix == ".json":
            continue
        if f.suffix == ".safetensors":
            total += sum(math.prod(shape) for shape in safetensors_shapes(f).values())
        elif f.suffix == ".gguf":
            total += gguf_parameter_count(f)
        else:
            return None
    return total


def safetensors_shapes(path: str | Path) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors file's header (8-byte little-endian length, then JSON)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise UserError(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8 or n > 100 << 20:
            raise UserError(f"{path} is not a valid safetensors file (header length {n} for a {size}-byte file)")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"{path} has a corrupt safetensors header: {err}") from None
    if not isinstance(header, dict):
        raise UserError(f"{path} has a corrupt safetensors header")
    return {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def gguf_parameter_count(path: str | Path) -> int:
    """Sum of the element counts of a GGUF file's tensors (header only; the tensor data is memory-mapped, not read)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
        return int(sum(int(t.n_elements) for t in reader.tensors))
    except Exception as err:  # the gguf reader raises ValueError, struct.error, IndexError ... on bad files
        raise UserError(f"{path} is not a readable GGUF file: {type(err).__name__}: {err}") from None
