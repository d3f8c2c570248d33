"""The coded message of a Markov chain's count table: its length in bits, 8 x len(bytes), is the prior's C.

A k-th order chain (tokenbounds.models.markov) is fixed by its order k, the vocabulary size V, the eot id, the
pseudo-count a of its additive smoothing, and the table of gram counts n(g) > 0 over the distinct grams g (k padded
context ids and the next id; tokenbounds.data.ngrams). The table is coded as the trie of its sorted grams, level by
level (breadth first): level d (d = 1 .. k + 1) lists the distinct length-d prefixes in order, each as its last id;
the children of a prefix are the next level's prefixes that extend it, consecutive and in increasing order. So the
table is exactly

    for d = 0 .. k:      the number of children of every level-d prefix (level 0: the empty prefix, 1 node)
    for d = 1 .. k + 1:  the last id of every level-d prefix
    for every gram:      its count

and the decoder rebuilds the grams (each level's parent of prefix j is found from the children counts) and checks
that every prefix's children are strictly increasing (the one canonical trie of a set). Each of the 2k + 3 symbol
streams is range-coded with its own empirical frequencies (tokenbounds.compress.coding): children counts as
n - 1, ids as themselves, counts as min(n, cap) - 1 with cap = min(max count, CAP) and the excess n - cap of every
count >= cap as a varint in a raw section. The frequency tables are the header.

    container: b"TBMC" | version (1 byte) | sha256(body) (32 bytes) | body
    body:      varint len(Z) | Z = zlib(header, level 9) | varint n_words | n_words x 4 bytes (little-endian uint32)
               | raw section: the varint excesses, in gram order
    header:    varint k | varint V | varint eot | 8 bytes: a (float64, little-endian) | varint cap
               | 2k + 3 frequency tables in stream order, each varint length | length varints

`decode(encode(t)) == t` exactly (tested); a truncated or altered message fails its checksum (UserError).
"""

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from tokenbounds.compress.coding import decode_symbols, encode_symbols
from tokenbounds.compress.message import _Reader, _varint, seal, unseal
from tokenbounds.data.ngrams import gram_keys
from tokenbounds.errors import UserError

FORMAT = "tokenbounds-markov"  # the manifest's format tag of a chain directory (tokenbounds.models.markov)
MAGIC = b"TBMC"
VERSION = 1
CAP = 4096  # the largest count coded as a symbol; above it, a varint excess


@dataclass(frozen=True, eq=False)
class CountTable:
    order: int  # k
    vocab_size: int  # V
    eot: int
    pseudo_count: float  # a: p(y | c) = (n(c, y) + a / V) / (n(c) + a)
    grams: np.ndarray  # (N, k + 1) int64, sorted and distinct: k padded context ids, then the next id
    counts: np.ndarray  # (N,) int64 > 0

    def __eq__(self, other) -> bool:
        same = (self.order, self.vocab_size, self.eot, self.pseudo_count) == (
            other.order,
            other.vocab_size,
            other.eot,
            other.pseudo_count,
        )
        return same and np.array_equal(self.grams, other.grams) and np.array_equal(self.counts, other.counts)


def _levels(grams: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The trie of sorted distinct grams: per level d = 1..k+1 the last ids of its prefixes; per level d = 0..k the
    number of children of each of its prefixes."""
    n, width = grams.shape
    new = np.zeros(n, dtype=bool)
    new[:1] = True
    firsts = [np.zeros(1, dtype=np.int64)]  # level 0: the one empty prefix, starting at gram 0
    ids = []
    for d in range(width):
        if n > 1:
            new[1:] |= grams[1:, d] != grams[:-1, d]
        starts = np.flatnonzero(new)
        ids.append(grams[starts, d])
        firsts.append(starts)
    children = [np.diff(np.searchsorted(b, np.append(a, n))) for a, b in zip(firsts[:-1], firsts[1:], strict=True)]
    return ids, children


def _streams(table: CountTable) -> tuple[list[np.ndarray], int]:
    """The 2k + 3 symbol streams in message order, and cap."""
    ids, children = _levels(table.grams)
    cap = int(min(table.counts.max(), CAP))
    return [c - 1 for c in children] + ids + [np.minimum(table.counts, cap) - 1], cap


def check_table(table: CountTable) -> None:
    """A table this code can carry: a bug (ValueError), not a user's error, when it is not."""
    g, c = table.grams, table.counts
    if g.ndim != 2 or g.shape[1] != table.order + 1 or len(g) == 0 or c.shape != (len(g),):
        raise ValueError("a count table needs (N, k + 1) grams with N > 0 and one count each")
    if g.min() < 0 or g.max() >= table.vocab_size or c.min() < 1 or not 0 <= table.eot < table.vocab_size:
        raise ValueError("count table ids must lie in [0, V) and counts be >= 1")
    if not table.pseudo_count > 0:
        raise ValueError("the pseudo-count must be > 0")
    if len(g) > 1 and not np.all(gram_keys(g[1:]) > gram_keys(g[:-1])):
        raise ValueError("count table grams must be sorted and distinct")


def encode(table: CountTable) -> bytes:
    """The message bytes of `table`; its length in bits is 8 * len(result)."""
    check_table(table)
    streams, cap = _streams(table)
    tables = [np.bincount(s, minlength=1) for s in streams]
    head = bytearray()
    head += _varint(table.order) + _varint(table.vocab_size) + _varint(table.eot)
    head += struct.pack("<d", table.pseudo_count) + _varint(cap)
    for t in tables:
        head += _varint(len(t)) + b"".join(_varint(int(x)) for x in t)
    words = encode_symbols([(s, i) for i, s in enumerate(streams)], tables)
    raw = b"".join(_varint(int(x)) for x in table.counts[table.counts >= cap] - cap)
    z = zlib.compress(bytes(head), 9)
    body = b"".join([_varint(len(z)), z, _varint(len(words)), words.astype("<u4").tobytes(), raw])
    return seal(MAGIC, VERSION, body)


def decode(message: bytes) -> CountTable:
    """The CountTable a message describes. UserError on a truncated, altered or malformed message."""
    body = unseal(bytes(message), MAGIC, VERSION, "Markov count-table message")
    try:
        return _parse(body)
    except UserError:
        raise
    except (ValueError, IndexError, zlib.error, struct.error, OverflowError) as err:
        raise UserError(f"corrupt count-table message: {err}") from None


def _parse(body: bytes) -> CountTable:
    r = _Reader(body)
    head = _Reader(zlib.decompress(r.take(r.varint())))
    order, vocab, eot = head.varint(), head.varint(), head.varint()
    (pseudo,) = struct.unpack("<d", head.take(8))
    cap = head.varint()
    tables = [np.array([head.varint() for _ in range(head.varint())], dtype=np.int64) for _ in range(2 * order + 3)]
    if head.pos != len(head.data):
        raise ValueError("trailing bytes in the header")
    words = np.frombuffer(r.take(4 * r.varint()), dtype="<u4").astype(np.uint32)
    lengths = [int(t.sum()) for t in tables]
    symbols = decode_symbols(words, [(n, i) for i, n in enumerate(lengths)], tables)
    children, ids, capped = [s.astype(np.int64) + 1 for s in symbols[: order + 1]], symbols[order + 1 : -1], symbols[-1]
    grams = _rebuild(children, [s.astype(np.int64) for s in ids])
    counts = capped.astype(np.int64) + 1
    for at in np.flatnonzero(counts >= cap):
        counts[at] += r.varint()
    if r.pos != len(body):
        raise ValueError(f"{len(body) - r.pos} unexplained bytes at the end of the message")
    table = CountTable(order, vocab, eot, pseudo, grams, counts)
    check_table(table)
    return table


def _rebuild(children: list[np.ndarray], ids: list[np.ndarray]) -> np.ndarray:
    """Grams from the trie's levels; ValueError unless the levels fit together and every prefix's children rise."""
    parent = np.zeros(1, dtype=np.int64)  # for each prefix of the current level, its row in `rows`
    rows = np.zeros((1, 0), dtype=np.int64)
    for count, last in zip(children, ids, strict=True):
        if len(count) != len(rows) or count.sum() != len(last):
            raise ValueError("the trie's levels do not fit together")
        parent = np.repeat(np.arange(len(rows)), count)
        same_parent = parent[1:] == parent[:-1]
        if np.any(last[1:][same_parent] <= last[:-1][same_parent]):
            raise ValueError("a prefix's children are not strictly increasing")
        rows = np.concatenate([rows[parent], last[:, None]], axis=1)
    return rows
