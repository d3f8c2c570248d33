"""Top-k error with ties counted against the model: the one rule the scorer and the coverage simulation share.

For scores z (logits, or probabilities: any strictly increasing map of them gives the same answer) and a target y,

    rank(y)          = #{v : z_v >= z_y} - 1          (the target itself is the one v with v = y that is not counted)
    top-k error(y)   = 1[rank(y) >= k]

Every token scored at least as high as the target is counted ahead of it, so a tie never turns a miss into a hit:
constant logits give rank V - 1 and top-k error 1 for every k < V (a "strictly greater" count would give rank 0,
a hit for any V). The rule is pessimistic, never optimistic: the true top-k error of any tie-breaking order is at
most this one, so a bound on this loss bounds every tie-breaking version of it.

The scorer computes the same count in torch on the logits it already holds (`models/scorer.py`); tests check the
two agree on tied and constant logits.
"""

import numpy as np


def pessimistic_rank(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """#{v : z_v >= z_y} - 1 for each row of `scores` (shape (..., V)) and its target id (shape (...))."""
    z = np.asarray(scores)
    y = np.asarray(targets, dtype=np.int64)
    target_score = np.take_along_axis(z, y[..., None], axis=-1)
    return np.sum(z >= target_score, axis=-1).astype(np.int64) - 1


def topk_error(rank: np.ndarray, k: int) -> np.ndarray:
    """1.0 where the target is not among the k best (rank >= k, ties counted against the model), else 0.0."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return (np.asarray(rank) >= k).astype(np.float64)
