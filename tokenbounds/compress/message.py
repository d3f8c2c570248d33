"""The self-describing binary message of a quantized model. Its length in bits, 8 x len(bytes), is the prior's C.

Everything a decoder needs is inside, and counted:

    container: b"TBQM" | version (1 byte) | sha256(body) (32 bytes) | body
    body:      varint len(Z) | Z = zlib(header, level 9)
               varint n_words | n_words x 4 bytes: the range-coded symbols (little-endian uint32, see `coding`)
               raw section: the bytes of every raw tensor, in entry order, little-endian
    header:    varint len(config) | config (the architecture config.json bytes; may be empty)
               varint n_groups | per group: varint L | L x float16 centroids | L varint counts (the frequency table)
               varint n_entries | per entry: varint len(name) | name (utf-8) | dtype code (1 byte) | varint ndim |
                   ndim varint dims | kind (1 byte): 0 quantized + varint group, 1 raw + storage dtype code (1 byte),
                   2 alias + varint index of the earlier entry it equals

Varints are unsigned LEB128. Dtype codes index `quantize.DTYPES`. The checksum makes a truncated or altered message
fail loudly (UserError) instead of decoding to other weights; its 37 container bytes are part of the length.
`decode(encode(state))` reproduces the state exactly: `dequantize()` of both is bitwise equal (tested).
"""

import hashlib
import struct
import zlib

import numpy as np

from tokenbounds.compress.coding import decode_symbols, encode_symbols
from tokenbounds.compress.quantize import DTYPES, Entry, Group, QuantizedState
from tokenbounds.errors import UserError

MAGIC = b"TBQM"
VERSION = 1
PREFIX = 4 + 1 + 32  # container bytes before the body: magic, version, sha256
KINDS = ("quantized", "raw", "alias")


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("read past the end")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        n = shift = 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")


def encode(state: QuantizedState) -> bytes:
    """The message bytes of `state`. Its length in bits is 8 * len(result)."""
    index = {e.name: i for i, e in enumerate(state.entries)}
    head = bytearray()
    head += _varint(len(state.config)) + state.config
    head += _varint(len(state.groups))
    for g in state.groups:
        head += _varint(g.levels) + np.asarray(g.centroids, dtype="<f2").tobytes()
        for c in g.counts:
            head += _varint(int(c))
    head += _varint(len(state.entries))
    raw = bytearray()
    streams = []
    for e in state.entries:
        name = e.name.encode("utf-8")
        head += _varint(len(name)) + name + bytes([DTYPES.index(e.dtype)]) + _varint(len(e.shape))
        for d in e.shape:
            head += _varint(int(d))
        head += bytes([KINDS.index(e.kind)])
        if e.kind == "quantized":
            head += _varint(e.group)
            streams.append((e.symbols, e.group))
        elif e.kind == "raw":
            head += bytes([DTYPES.index(e.storage)])
            raw += np.asarray(e.data, dtype=np.dtype(e.storage).newbyteorder("<")).tobytes()
        else:
            head += _varint(index[e.target])
    words = encode_symbols(streams, [g.counts for g in state.groups])
    z = zlib.compress(bytes(head), 9)
    body = b"".join([_varint(len(z)), z, _varint(len(words)), words.astype("<u4").tobytes(), bytes(raw)])
    return seal(MAGIC, VERSION, body)


def seal(magic: bytes, version: int, body: bytes) -> bytes:
    """The container of every tokenbounds message: 4 magic bytes, a version byte, sha256(body), then the body."""
    return magic + bytes([version]) + hashlib.sha256(body).digest() + body


def unseal(message: bytes, magic: bytes, version: int, what: str) -> bytes:
    """The body of a `seal`ed message; UserError naming `what` when its magic, version or checksum is off."""
    if len(message) < PREFIX or message[:4] != magic:
        raise UserError(f"not a tokenbounds {what} (bad magic or too short)")
    if message[4] != version:
        raise UserError(f"unsupported {what} version {message[4]} (this decoder reads version {version})")
    body = message[PREFIX:]
    if hashlib.sha256(body).digest() != message[5:PREFIX]:
        raise UserError(f"{what} checksum mismatch: the message was truncated or altered; refusing to decode it")
    return body


def verify(message: bytes) -> bytes:
    """Check the container (magic, version, sha256); return the body. UserError when anything is off."""
    return unseal(message, MAGIC, VERSION, "quantized-model message")


def decode(message: bytes) -> QuantizedState:
    """The QuantizedState a message describes. UserError on a truncated, altered or malformed message."""
    body = verify(bytes(message))
    try:
        return _parse(body)
    except UserError:
        raise
    except (ValueError, IndexError, KeyError, zlib.error, struct.error, UnicodeDecodeError, OverflowError) as err:
        raise UserError(f"corrupt message: {err}") from None


def _parse(body: bytes) -> QuantizedState:
    r = _Reader(body)
    head = _Reader(zlib.decompress(r.take(r.varint())))
    config = bytes(head.take(head.varint()))
    groups = []
    for _ in range(head.varint()):
        n = head.varint()
        centroids = np.frombuffer(head.take(2 * n), dtype="<f2").astype(np.float16)
        counts = np.array([head.varint() for _ in range(n)], dtype=np.int64)
        groups.append(Group(centroids, counts))
    entries: list[Entry] = []
    for _ in range(head.varint()):
        name = bytes(head.take(head.varint())).decode("utf-8")
        dtype = DTYPES[head.byte()]
        shape = tuple(head.varint() for _ in range(head.varint()))
        kind = KINDS[head.byte()]
        e = Entry(name, shape, dtype, kind)
        if kind == "quantized":
            e.group = head.varint()
            if e.group >= len(groups):
                raise ValueError(f"tensor {name} refers to codebook {e.group} of {len(groups)}")
        elif kind == "raw":
            e.storage = DTYPES[head.byte()]
        else:
            target = head.varint()
            if target >= len(entries) or entries[target].kind == "alias":
                raise ValueError(f"tensor {name} is tied to an invalid entry {target}")
            e.target = entries[target].name
            if entries[target].shape != shape:
                raise ValueError(f"tied tensor {name} has another shape than {e.target}")
        entries.append(e)
    if head.pos != len(head.data):
        raise ValueError("trailing bytes in the header")
    used = np.zeros(len(groups), dtype=np.int64)
    for e in entries:
        if e.kind == "quantized":
            used[e.group] += e.size
    for k, g in enumerate(groups):
        if g.counts.sum() != used[k]:
            raise ValueError(f"codebook {k}: frequency table counts {g.counts.sum()} symbols, tensors hold {used[k]}")
    words = np.frombuffer(r.take(4 * r.varint()), dtype="<u4").astype(np.uint32)
    quantized = [e for e in entries if e.kind == "quantized"]
    symbols = decode_symbols(words, [(e.size, e.group) for e in quantized], [g.counts for g in groups])
    for e, s in zip(quantized, symbols, strict=True):
        e.symbols = s
    for e in entries:
        if e.kind == "raw":
            dt = np.dtype(e.storage).newbyteorder("<")
            e.data = np.frombuffer(r.take(e.size * dt.itemsize), dtype=dt).astype(e.storage)
    if r.pos != len(body):
        raise ValueError(f"{len(body) - r.pos} unexplained bytes at the end of the message")
    return QuantizedState(entries, groups, config=config)


def breakdown(message: bytes) -> dict:
    """Where the bits go: container, header (names, shapes, codebooks, frequency tables, config), coded symbols,
    raw tensors. All in bits; they sum to 8 * len(message)."""
    body = verify(message)
    r = _Reader(body)
    zlen = r.varint()
    r.take(zlen)
    header_bits = 8 * r.pos
    n_words = r.varint()
    coded_bits = 8 * (r.pos - header_bits // 8) + 32 * n_words
    raw_bits = 8 * (len(body) - r.pos - 4 * n_words)
    return {
        "container_bits": 8 * PREFIX,
        "header_bits": header_bits,
        "coded_symbols_bits": coded_bits,
        "raw_bits": raw_bits,
        "total_bits": 8 * len(message),
    }
