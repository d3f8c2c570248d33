"""Counts of (context, next token) under the document rule with L = k, streamed over the shards.

The context of x_i is the document rule's (tokenbounds.data.units): ctx_k(i) = x[max(i - k, d(i)) : i], the previous
<= k tokens since the last eot d(i) (kept as the beginning-of-document token; a virtual eot stands before each shard).
A context holds at most one eot, at its start, so left-padding it with eot to exactly k tokens is one-to-one:

    pad(ctx) = (eot, ..., eot) + ctx        (k tokens; strip the leading eots but one to get ctx back)

and every context is a row of k ids. The same padding, applied to any window, is "the window since its last eot,
read as a document start when it is shorter than k": `padded_contexts` computes it for training counts and for the
chain's predictions alike, so both read context k the same way.

A gram is pad(ctx_k(i)) followed by x_i: k + 1 ids. Grams are keyed as fixed-width byte strings (big-endian uint32
ids), whose byte order is the ids' lexicographic order, so numpy's sort and unique work on them directly. Counting
streams the corpus in chunks and merges each chunk's distinct grams into a running table: memory is bounded by the
number of distinct grams (at most min(m, V^(k+1))), never by V^(k+1) itself.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from tqdm.auto import tqdm

from tokenbounds.data.shards import Corpus
from tokenbounds.errors import UserError

CHUNK = 1 << 18  # targets per counting chunk


def gram_keys(rows: np.ndarray) -> np.ndarray:
    """(n, w) ids -> n byte strings of 4w bytes, ordered as the rows are lexicographically."""
    rows = np.ascontiguousarray(rows, dtype=">u4")
    return rows.view(f"S{4 * rows.shape[1]}").reshape(-1) if rows.shape[1] else np.zeros(len(rows), "S1")


def key_rows(keys: np.ndarray, width: int) -> np.ndarray:
    """Inverse of `gram_keys`: n byte strings -> (n, width) int64 ids."""
    if width == 0:
        return np.zeros((len(keys), 0), dtype=np.int64)
    raw = np.frombuffer(np.ascontiguousarray(keys, dtype=f"S{4 * width}").tobytes(), dtype=">u4")
    return raw.reshape(-1, width).astype(np.int64)


def padded_contexts(windows: np.ndarray, eot: int) -> np.ndarray:
    """(n, k) windows of ids -> each window with every id before its last eot replaced by eot (a copy)."""
    out = np.array(windows, dtype=np.int64)
    n, k = out.shape
    if k == 0 or n == 0:
        return out
    is_eot = out == eot
    last = np.where(is_eot.any(axis=1), k - 1 - np.argmax(is_eot[:, ::-1], axis=1), -1)
    out[np.arange(k)[None, :] < last[:, None]] = eot
    return out


def _shard_grams(shard: np.ndarray, order: int, eot: int, start: int, stop: int) -> np.ndarray:
    """The grams of targets shard[start:stop], as (stop - start, order + 1) ids."""
    lo = start - order
    body = np.asarray(shard[max(lo, 0) : stop], dtype=np.int64)
    if lo < 0:  # the virtual eot before the shard (and eots before it, which the padding makes eot anyway)
        body = np.concatenate([np.full(-lo, eot, dtype=np.int64), body])
    contexts = sliding_window_view(body[:-1], order)[: stop - start] if order else np.zeros((stop - start, 0))
    return np.concatenate([padded_contexts(contexts, eot), body[order:, None]], axis=1)


def _merge(keys: np.ndarray, counts: np.ndarray, pending: list[tuple[np.ndarray, np.ndarray]]):
    """The running table plus the chunks' tables, summed per distinct gram (exact integers: int64 bincount)."""
    if not pending:
        return keys, counts
    merged, inverse = np.unique(np.concatenate([keys, *(k for k, _ in pending)]), return_inverse=True)
    total = np.zeros(len(merged), dtype=np.int64)
    np.add.at(total, inverse.reshape(-1), np.concatenate([counts, *(c for _, c in pending)]))
    return merged, total


def count_bytes(n_grams: int, order: int, chunk: int = CHUNK) -> int:
    """Upper estimate of the memory `count_grams` needs for a table of n_grams grams of order k, in bytes.

    Per gram at the largest merge: keys (4(k+1) bytes) of the table, of the pending chunks (at most as many again),
    of their concatenation and of its sorted copy (6 keys); int64s for the table's and the chunks' counts, their
    concatenation, the sort's permutation, the inverse and the summed counts (9). Plus one chunk's windows.
    """
    return n_grams * (6 * 4 * (order + 1) + 9 * 8) + chunk * (order + 1) * 8 * 4


def max_grams(corpus: Corpus, order: int, vocab: int) -> int:
    """Distinct grams of order k can be at most min(m, V^(k+1)) (V^(k+1) computed without overflow)."""
    return min(corpus.n_tokens, vocab ** (order + 1))


def check_memory(corpus: Corpus, order: int, vocab: int, max_memory: int) -> int:
    """The estimate for order k, or a UserError naming it when it exceeds `max_memory` bytes."""
    need = count_bytes(max_grams(corpus, order, vocab), order, min(CHUNK, corpus.n_tokens))
    if need > max_memory:
        raise UserError(
            f"a Markov chain of order {order} may need {need / 2**30:.2f} GiB for its counts (up to "
            f"{max_grams(corpus, order, vocab):,} distinct {order + 1}-grams = min(m, V^{order + 1})), over "
            f"--max-memory {max_memory / 2**30:.2f} GiB: lower the order or raise --max-memory"
        )
    return need


def count_grams(corpus: Corpus, order: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct grams as (N, k + 1) int64 ids, their counts): every token of every shard counted once."""
    if order < 0:
        raise UserError(f"a Markov chain's order must be >= 0, got {order}")
    keys, counts = np.zeros(0, gram_keys(np.zeros((0, order + 1))).dtype), np.zeros(0, np.int64)
    bar = tqdm(total=corpus.n_tokens, desc=f"counting {order + 1}-grams", unit="tok", disable=not progress)
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    for shard in corpus.shards:
        for start in range(0, len(shard), CHUNK):
            stop = min(start + CHUNK, len(shard))
            grams = gram_keys(_shard_grams(shard, order, corpus.eot, start, stop))
            pending.append(np.unique(grams, return_counts=True))
            if sum(len(k) for k, _ in pending) >= len(keys):  # merge geometrically: O(N log N) in all
                keys, counts = _merge(keys, counts, pending)
                pending = []
            bar.update(stop - start)
    keys, counts = _merge(keys, counts, pending)
    bar.close()
    return key_rows(keys, order + 1), counts
