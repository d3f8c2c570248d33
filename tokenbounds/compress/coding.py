"""Arithmetic (range) coding of codebook symbols with their empirical frequencies, using `constriction`.

Each codebook (`quantize.Group`) has a frequency table: the count of every symbol among the entries it codes. The
message stores that table, so encoder and decoder build the same model from the same integers: a
`constriction.stream.model.Categorical` with probabilities count / total (float64) over the symbols that occur
(symbols with count 0 are left out of the model, so they waste no probability mass), `perfect=False`. Every symbol
of every quantized tensor is coded, in message order, into one `constriction.stream.queue.RangeEncoder` stream of
32-bit words. A codebook whose symbols are all the same needs no bits.

The coded length is within a small overhead of the empirical entropy n*H(counts) bits (constriction approximates
the probabilities in fixed point and ends the stream on a 32-bit word boundary; measured: +0.02 % or less on the
SmolLM2-135M study, docs/compression.md); `entropy_bits` gives n*H.
Encoder and decoder must use the same constriction release for the fixed-point model to match; the manifest
records it.
"""

from collections.abc import Sequence

import constriction
import numpy as np

from tokenbounds.errors import UserError


def entropy_bits(counts: np.ndarray) -> float:
    """n * H(counts / n) in bits: the ideal length of n symbols coded with their empirical frequencies."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    n = c.sum()
    return float(-(c * np.log2(c / n)).sum()) if n else 0.0


class _Model:
    """The coding model of one frequency table: used symbols -> dense indices -> constriction Categorical."""

    def __init__(self, counts: np.ndarray):
        counts = np.asarray(counts, dtype=np.int64)
        if np.any(counts < 0):
            raise UserError("corrupt message: negative symbol count")
        self.used = np.flatnonzero(counts)
        self.dense = np.full(len(counts), -1, dtype=np.int32)
        self.dense[self.used] = np.arange(len(self.used), dtype=np.int32)
        self.model = None
        if len(self.used) > 1:
            p = counts[self.used].astype(np.float64)
            self.model = constriction.stream.model.Categorical(p / p.sum(), perfect=False)


def encode_symbols(streams: Sequence[tuple[np.ndarray, int]], tables: Sequence[np.ndarray]) -> np.ndarray:
    """Range-code `streams` [(symbols, table index), ...] in order; `tables` are the frequency tables.

    Every symbol must have a non-zero count in its table. Returns the compressed words (uint32).
    """
    models = [_Model(t) for t in tables]
    encoder = constriction.stream.queue.RangeEncoder()
    for symbols, t in streams:
        m = models[t]
        if m.model is None:
            continue
        dense = m.dense[np.asarray(symbols)]
        if np.any(dense < 0):
            raise ValueError("a symbol has count 0 in its frequency table")
        encoder.encode(dense, m.model)
    return np.asarray(encoder.get_compressed(), dtype=np.uint32)


def decode_symbols(words: np.ndarray, streams: Sequence[tuple[int, int]], tables: Sequence[np.ndarray]) -> list:
    """Inverse of `encode_symbols`: `streams` [(number of symbols, table index), ...] -> list of int32 arrays."""
    models = [_Model(t) for t in tables]
    decoder = constriction.stream.queue.RangeDecoder(np.ascontiguousarray(words, dtype=np.uint32))
    out = []
    for n, t in streams:
        m = models[t]
        if m.model is None:
            sym = np.full(n, m.used[0] if len(m.used) else 0, dtype=np.int32)
        else:
            sym = m.used[decoder.decode(m.model, n)].astype(np.int32)
        out.append(sym)
    if not decoder.maybe_exhausted():
        raise UserError("corrupt message: coded symbols left over after decoding")
    return out
