"""The unsmoothed mean NLL as a reportable number: finite, or None with the count of zero-probability targets.

A -inf logit is a legal p = 0, so log p(y) = -inf for such a target and the unsmoothed NLL is +inf. That is a
true statement about the model, not a bound (the bounds use the smoothed loss, which is finite), but JSON has no
infinity: report null and say how many targets had p = 0 instead.
"""

import math

import numpy as np


def unsmoothed_nll(logp: np.ndarray) -> dict:
    """{"mean_nll_bits_unsmoothed": float or None, "zero_probability_targets": int} from natural-log p(y)."""
    logp = np.asarray(logp, dtype=np.float64)
    if np.isnan(logp).any():  # the scorer refuses NaN logits, so this is a caller's bug
        raise ValueError("log-probabilities hold NaN")
    zero = int(np.count_nonzero(np.isneginf(logp)))
    mean = None if zero or not len(logp) else float(-np.mean(logp) / math.log(2.0))
    return {"mean_nll_bits_unsmoothed": mean, "zero_probability_targets": zero}
