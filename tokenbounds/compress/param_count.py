"""How many parameters checkpoint files hold, read from their headers only (no tensor data is read).

safetensors: an 8-byte little-endian header length, then a JSON header of name -> dtype, shape, offsets. GGUF: the
tensor info table after the key-value metadata, walked with `struct` (`gguf.GGUFReader` builds a numpy view of every
metadata value, a 49,152-entry vocabulary included, and takes seconds; this reads the same table in milliseconds).
Packed formats (GPTQ, AWQ, QuIP#) store several weights per integer: `architecture.dense_parameter_count` counts the
weights they stand for.
"""

import json
import math
import mmap
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
    """Sum of the element counts of a GGUF file's tensors, from its header (no tensor data is read)."""
    return sum(math.prod(shape) for shape in gguf_shapes(path).values())


# GGUF value types (the spec's gguf_metadata_value_type): fixed sizes in bytes; 8 is a string, 9 an array.
_GGUF_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY, _GGUF_UINT32 = 8, 9, 4
_GGUF_ALIGNMENT = 32  # the spec's default, unless general.alignment says otherwise


class _Cursor:
    """Little reads from a byte buffer at a moving offset, in the file's byte order; running past the end raises."""

    def __init__(self, data, order: str):
        self.data, self.order, self.at = data, order, 0

    def take(self, n: int) -> int:
        start = self.at
        if n < 0 or start + n > len(self.data):
            raise ValueError(f"truncated at byte {start} (needs {n} more bytes of a {len(self.data)}-byte file)")
        self.at += n
        return start

    def u32(self) -> int:
        return struct.unpack_from(self.order + "I", self.data, self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack_from(self.order + "Q", self.data, self.take(8))[0]

    def string(self) -> bytes:
        n = self.u64()
        start = self.take(n)
        return bytes(self.data[start : start + n])

    def skip_value(self, kind: int) -> None:
        if kind in _GGUF_SCALAR_BYTES:
            self.take(_GGUF_SCALAR_BYTES[kind])
        elif kind == _GGUF_STRING:
            self.take(self.u64())
        elif kind == _GGUF_ARRAY:
            item, count = self.u32(), self.u64()
            if item in _GGUF_SCALAR_BYTES:
                self.take(count * _GGUF_SCALAR_BYTES[item])
                return
            if count * 8 > len(self.data) - self.at:  # each string or nested array takes >= 8 bytes
                raise ValueError(f"truncated: an array of {count} items at byte {self.at} cannot fit in the file")
            if item == _GGUF_STRING:  # a vocabulary: ~100k strings, so the loop is kept tight
                self.at = _skip_strings(self.data, self.at, count, self.order)
                return
            for _ in range(count):
                self.skip_value(item)
        else:
            raise ValueError(f"unknown metadata value type {kind} at byte {self.at - 4}")


def _skip_strings(data, at: int, count: int, order: str) -> int:
    """The offset after `count` length-prefixed strings starting at `at`."""
    length = struct.Struct(order + "Q").unpack_from
    size = len(data)
    for _ in range(count):
        if at + 8 > size:  # also ends the loop over a corrupt count early
            raise ValueError(f"truncated: a string array runs past the end of the {size}-byte file")
        at += 8 + length(data, at)[0]
    if at > size:
        raise ValueError(f"truncated: a string array runs to byte {at} of a {size}-byte file")
    return at


def gguf_shapes(path: str | Path) -> dict[str, list[int]]:
    """Tensor name -> dimensions (as stored, innermost first) from a GGUF file's header, per the GGUF spec.

    Layout: magic "GGUF", version (uint32; 2 and 3, as `gguf.GGUFReader`), tensor count and metadata count
    (uint64), the metadata (key string, uint32 value type, value), then per tensor: name string, uint32 n_dims,
    n_dims uint64 dims, uint32 ggml type, uint64 offset into the data section, which starts at the next multiple of
    general.alignment. Strings are a uint64 length and UTF-8 bytes. A file whose version reads with its low 16 bits
    zero was written big-endian (GGUFReader's rule). Each tensor's bytes must lie inside the file, so a truncated
    download is refused, not counted.
    """
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data[:4] != b"GGUF":
                raise ValueError("GGUF magic invalid")
            order = ">" if struct.unpack_from("<I", data, 4)[0] & 0xFFFF == 0 else "<"
            cur = _Cursor(data, order)
            cur.take(4)
            version = cur.u32()
            if version not in (2, 3):
                raise ValueError(f"version {version} is not supported (2 and 3 are)")
            n_tensors, n_kv = cur.u64(), cur.u64()
            alignment = _GGUF_ALIGNMENT
            for _ in range(n_kv):
                key, kind = cur.string(), cur.u32()
                if key == b"general.alignment":
                    if kind != _GGUF_UINT32:
                        raise ValueError("general.alignment is not a uint32")
                    alignment = cur.u32()
                    if alignment == 0 or alignment & (alignment - 1):
                        raise ValueError(f"alignment {alignment} is not a power of two")
                else:
                    cur.skip_value(kind)
            infos = {}
            for _ in range(n_tensors):
                name = cur.string().decode("utf-8")
                dims = [cur.u64() for _ in range(cur.u32())]
                kind, offset = cur.u32(), cur.u64()
                if name in infos:
                    raise ValueError(f"tensor {name!r} appears twice")
                infos[name] = dims, GGMLQuantizationType(kind), offset
            start = -(-cur.at // alignment) * alignment
            for name, (dims, kind, offset) in infos.items():
                block, block_bytes = GGML_QUANT_SIZES[kind]
                end = start + offset + math.prod(dims) // block * block_bytes
                if end > len(data):
                    raise ValueError(f"tensor {name!r} ends at byte {end}, past the end of the file ({len(data)})")
    # mmap of an empty file, an unknown tensor type: ValueError; metadata arrays nested past Python's stack:
    # RecursionError.
    except (OSError, ValueError, KeyError, UnicodeDecodeError, struct.error, RecursionError) as err:
        raise UserError(f"{path} is not a readable GGUF file: {type(err).__name__}: {err}") from None
    return {name: dims for name, (dims, _, _) in infos.items()}
