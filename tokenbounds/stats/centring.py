"""The centring of the empirical-Bernstein bound: the entropy of the smoothed prediction, in bits.

eb's variance term uses xi_i = (c_i - l_i) / Delta with a centring c_i that is predictable (a function of x_<i
only) and >= a, so that xi_i >= -1 (`eb.py`). The recommended c_i is the entropy (bits) of the smoothed prediction
q = (1 - alpha) p + alpha/V; the closer c_i is to l_i, the smaller v and the variance term.

It is >= a by construction: the Shannon entropy is at least the min-entropy, H(q) >= -log2 max_y q(y), and
max_y q(y) = (1 - alpha) max_y p(y) + alpha/V <= 1 - alpha + alpha/V, so H(q) >= -log2(1 - alpha + alpha/V) = a.
An unsmoothed entropy would not be (it is 0 for a one-hot p while a > 0). `smoothed_entropy_bits` is the numpy
reference of what the scorer computes in torch (`tokenbounds.models.scorer`).
"""

import numpy as np

from tokenbounds.stats.smoothing import LN2, check_alpha


def smoothed_entropy_bits(probs: np.ndarray, alpha: float) -> np.ndarray:
    """Entropy (bits) of q = (1 - alpha) p + alpha / V, for distributions p along the last axis."""
    alpha = check_alpha(alpha)
    p = np.asarray(probs, dtype=np.float64)
    vocab = p.shape[-1]
    q = (1.0 - alpha) * p + alpha / vocab  # > 0 everywhere, so q log q needs no special case
    return -np.sum(q * np.log(q), axis=-1) / LN2
