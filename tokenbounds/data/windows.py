"""Random training windows: contiguous token runs drawn uniformly over the corpus (shards in proportion to size)."""

import numpy as np

from tokenbounds.data.shards import Corpus
from tokenbounds.errors import UserError


def random_windows(
    corpus: Corpus, n: int, length: int, rng: np.random.Generator, *, vocab_size: int | None = None
) -> np.ndarray:
    """(n, length) int64 windows, each inside one shard, start drawn uniformly over all valid starts.

    Every id read is checked against `vocab_size` (default: the V that `corpus.check_vocab` accepted, if it was
    called; no check otherwise), so a shard edited after `prepare` is one clear error, not an IndexError mid-step.
    """
    vocab_size = corpus.model_vocab if vocab_size is None else vocab_size
    valid = np.maximum(corpus.shard_lengths - length + 1, 0)
    if valid.sum() == 0:
        raise UserError(f"no shard holds a window of {length} tokens: the corpus is smaller than one block")
    starts = rng.integers(0, valid.sum(), size=n)
    cum = np.concatenate([[0], np.cumsum(valid)])
    shard = np.searchsorted(cum, starts, side="right") - 1
    local = starts - cum[shard]
    out = np.empty((n, length), dtype=np.int64)
    for row, (k, s) in enumerate(zip(shard, local, strict=True)):
        out[row] = corpus.shards[k][s : s + length]
    if vocab_size is not None and n and int(out.max()) >= vocab_size:  # one max per batch; ids are unsigned
        row = int(np.argmax((out >= vocab_size).any(axis=1)))
        corpus.check_window(out[row], int(shard[row]), int(local[row]), vocab_size)
    return out
