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


# ---------------------------------------------------------------- the shipped centring: binned smoothed entropy
#
# The exact H(q) costs one log per vocabulary entry per alpha (8 alphas: as much as the model's forward pass).
# The bound only needs a predictable c in [a, a + Delta], so the scorer ships an approximation computed from one
# histogram of p, shared by every alpha. With beta = alpha / V, r = (1 - alpha) / beta and
# k(x) = (1 + 1/x) log(1 + x) (k -> 1 as x -> 0), the identity  -sum_v q_v ln q_v = -ln beta - (1 - alpha)
# sum_v p_v k(r p_v)  holds exactly; the approximation evaluates k exactly for the EXACT_TOP most probable tokens
# and, for every other token, at the midpoint of its histogram bin: bins are the float32 bit pattern of p shifted
# right by BIN_SHIFT (2^(23 - BIN_SHIFT) bins per octave, linear inside an octave), so a bin spans a factor of at
# most 1 + 2^-(23 - BIN_SHIFT). k varies by at most |ln(p_v / midpoint)| across a bin (|d k / d ln x| < 1), so the
# binning is within (1 - alpha) * (tail mass) * 2^-(24 - BIN_SHIFT) nats of H(q).
#
# A bin's mass is a float32 sum in token order (the scorer's scatter_add_; the reference's np.add.at adds in the
# same order, so both give the same bits for the same p): in float64 the V-wide copy and accumulation cost as much
# as the rest of the histogram. Recursive summation of n >= 0 terms has relative error at most
# gamma_(n-1) = (n - 1) u / (1 - (n - 1) u), u = 2^-24 (Higham, Accuracy and Stability, 2nd ed., section 4.2), and
# a bin holds n <= V - EXACT_TOP tokens, so the binned term sum_b mass_b k_b moves by at most gamma_(V-EXACT_TOP-1)
# of itself. That worst case needs tens of thousands of tokens in one bin (a near-uniform p: measured 4e-4 relative
# at V = 49,152, where the rigorous bound is 2.9e-3); an LM's p spreads over hundreds of bins and its sums round at
# ~1e-7. The float64 dot products and the rest add ~1e-15. The result is clipped to [a, a + Delta] (it can only
# leave that range through these errors).

EXACT_TOP = 100  # tokens whose terms are exact (the top-k statistics select them anyway)
BIN_SHIFT = 17  # 64 bins per octave: within 0.008 nats * (mass outside the top 100) of the exact entropy
N_BINS = (np.float32(1.0).view(np.uint32) >> BIN_SHIFT) + 1  # p <= 1: bins 0 .. bits(1.0) >> BIN_SHIFT

CENTRING = (
    f"entropy (bits) of the smoothed prediction, exact over the {EXACT_TOP} most probable tokens and, for the "
    f"others, from a histogram of float32 p with {2 ** (23 - BIN_SHIFT)} bins per octave (each token at its bin's "
    f"midpoint; within {2.0 ** -(24 - BIN_SHIFT) / LN2:.4f} bits x the mass outside the top {EXACT_TOP}), bin masses "
    f"summed in float32 (relative rounding at most (V - {EXACT_TOP + 1}) x 2^-24 of the binned term), clipped to "
    "[a, a + Delta]"
)


def summation_error(vocab_size: int) -> float:
    """gamma_(n-1) for n = V - EXACT_TOP: the largest relative rounding of a bin's float32 mass (note above)."""
    n = max(vocab_size - EXACT_TOP - 1, 0) * 2.0**-24
    return n / (1.0 - n)


def _k(x: np.ndarray) -> np.ndarray:
    """(1 + 1/x) ln(1 + x) in float64, continuous at x = 0 (value 1)."""
    x = np.asarray(x, dtype=np.float64)
    small = x < 1e-8
    safe = np.where(small, 1.0, x)
    return np.where(small, 1.0 + x / 2.0, np.log1p(safe) * (1.0 + 1.0 / safe))


def bin_midpoints() -> np.ndarray:
    """(N_BINS,) float64: the midpoint of each bin of float32 probabilities (bins by bit pattern >> BIN_SHIFT)."""
    edges = (np.arange(N_BINS + 1, dtype=np.uint64) << BIN_SHIFT).astype(np.uint32).view(np.float32)
    return (edges[:-1].astype(np.float64) + edges[1:].astype(np.float64)) / 2.0


def bin_weights(alphas, vocab_size: int) -> np.ndarray:
    """(N_BINS, n_alphas) float64: k(r_alpha * midpoint), the per-unit-mass term of a token in each bin."""
    mids = bin_midpoints()
    out = np.empty((N_BINS, len(alphas)))
    for j, alpha in enumerate(alphas):
        alpha = check_alpha(alpha)
        out[:, j] = _k((1.0 - alpha) * vocab_size / alpha * mids)
    return out


def _clip_bits(h_nats: np.ndarray, alpha: float, vocab: int) -> np.ndarray:
    a = -np.log2(1.0 - alpha + alpha / vocab)
    return np.clip(h_nats / LN2, a, np.log2(vocab / alpha))


def binned_smoothed_entropy_bits(probs: np.ndarray, alpha: float) -> np.ndarray:
    """The shipped centring (numpy reference of the scorer's torch code): see CENTRING and the note above.

    `probs` are distributions along the last axis; they are rounded to float32 for the binning and the bins' sums,
    as the scorer's are. Depends on p only (never on the target), and lies in [a, a + Delta].
    """
    alpha = check_alpha(alpha)
    p = np.asarray(probs, dtype=np.float64)
    vocab = p.shape[-1]
    flat = p.reshape(-1, vocab)
    rate = (1.0 - alpha) * vocab / alpha
    top = min(EXACT_TOP, vocab)
    idx = np.argpartition(-flat, top - 1, axis=-1)[:, :top]
    p_top = np.take_along_axis(flat, idx, axis=-1)
    exact = np.sum(p_top * _k(rate * p_top), axis=-1)
    tail = flat.astype(np.float32)
    np.put_along_axis(tail, idx, np.float32(0.0), axis=-1)  # ties: whichever tied tokens are taken, same terms
    binned = np.zeros(len(flat))
    if vocab > top:
        weights = _k(rate * bin_midpoints())
        for start in range(0, len(flat), 256):  # 256 histograms (8 MB) at a time
            t = tail[start : start + 256]
            hist = np.zeros((len(t), N_BINS), dtype=np.float32)
            np.add.at(hist, (np.arange(len(t))[:, None], t.view(np.uint32) >> BIN_SHIFT), t)  # as the scorer adds
            binned[start : start + 256] = hist.astype(np.float64) @ weights
    h_nats = np.log(vocab / alpha) - (1.0 - alpha) * (exact + binned)
    return _clip_bits(h_nats, alpha, vocab).reshape(p.shape[:-1])
