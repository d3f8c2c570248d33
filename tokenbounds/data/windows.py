"""Random training windows: contiguous token runs drawn uniformly over the corpus (shards in proportion to size)."""

import numpy as np

from tokenbounds.data.shards import Corpus
from tokenbounds.errors import UserError


def random_windows(corpus: Corpus, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """(n, length) int64 windows, each inside one shard, start drawn uniformly over all valid starts."""
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
    return out
