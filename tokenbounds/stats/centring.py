"""The centrings of the empirical-Bernstein bounds: the entropy of the smoothed prediction (bits) and the mass
outside the top k.

eb's variance term uses xi_i = (c_i - l_i) / Delta with a centring c_i that is predictable (a function of x_<i
only) and >= a, so that xi_i >= -1 (`eb.py`). The recommended c_i is the entropy (bits) of the smoothed prediction
q = (1 - alpha) p + alpha/V; the closer c_i is to l_i, the smaller v and the variance term. For the top-k error
(a = 0, Delta = 1) it is the model's mass outside its k most probable tokens, any predictable value in [0, 1].

It is >= a by construction: the Shannon entropy is at least the min-entropy, H(q) >= -log2 max_y q(y), and
max_y q(y) = (1 - alpha) max_y p(y) + alpha/V <= 1 - alpha + alpha/V, so H(q) >= -log2(1 - alpha + alpha/V) = a.
An unsmoothed entropy would not be (it is 0 for a one-hot p while a > 0). `smoothed_entropy_bits` is the exact
entropy; what the scorer computes in torch (`tokenbounds.models.scorer`, which the coverage simulation calls too) is
the shipped approximation below, and `binned_smoothed_entropy_bits` and `binned_outside_topk` are its numpy reference,
which the tests hold the torch code to."""

import numpy as np

from tokenbounds.stats.smoothing import LN2, check_alpha


def smoothed_entropy_bits(probs: np.ndarray, alpha: float) -> np.ndarray:
    """Entropy (bits) of q = (1 - alpha) p + alpha / V, for distributions p along the last axis."""
    alpha = check_alpha(alpha)
    p = np.asarray(probs, dtype=np.float64)
    vocab = p.shape[-1]
    q = (1.0 - alpha) * p + alpha / vocab  # > 0 everywhere, so q log q needs no special case
    return -np.sum(q * np.log(q), axis=-1) / LN2


# ---------------------------------------------------------------- the shipped centrings: one histogram of p
#
# The exact H(q) costs one log per vocabulary entry per alpha (8 alphas: as much as the model's forward pass), and the
# exact mass of the top k a top-k search over the vocabulary (as much again). The bound only needs predictable
# centrings in [a, a + Delta] and [0, 1], so the scorer ships both computed from one histogram of p per prediction,
# shared by every alpha and every k, and from p_top = max_v p_v (which is 1 / sum_v exp(z_v - max z), free from the
# log-softmax). Bins are the float32 bit pattern of p shifted right by BIN_SHIFT: 2^(23 - BIN_SHIFT) bins per octave,
# linear inside an octave, so a bin spans a factor rho <= 1 + 2^-(23 - BIN_SHIFT) (p >= 2^-126; the subnormal bins
# below hold less than V 2^-126 of mass). The histogram holds every token but one most probable one ("the tail").
#
# Entropy. With beta = alpha / V, r = (1 - alpha) / beta and k(x) = (1 + 1/x) log(1 + x) (k -> 1 as x -> 0), the
# identity  -sum_v q_v ln q_v = -ln beta - (1 - alpha) sum_v p_v k(r p_v)  holds exactly; the centring evaluates k
# exactly for p_top and, for every tail token, at the midpoint of its bin. k varies by at most |ln(p_v / midpoint)|
# <= ln(rho) / 2 across a bin (|d k / d ln x| < 1), so the binning is within (1 - alpha) (1 - p_top) 2^-(24 - BIN_SHIFT)
# nats of H(q). Bins below ENTROPY_FLOOR are valued at k = 1 (only their total mass is used): there r p_v < r 2^-60
# and 1 <= k(x) <= 1 + x / 2, so this adds at most (1 - alpha) r 2^-61 of their mass, itself < V 2^-60 (below
# 1e-15 nats for any V <= 2^24 and alpha >= 1e-6), and the dot products run over the 3,841 bins above it only.
#
# Top-k mass. Bins are ordered like p, so the tail's j = k - 1 largest values fill the highest bins first. A bin of
# mass M_b and midpoint m_b holds n_b = M_b / m_b tokens, to within a factor 1 +- (rho - 1) / (rho + 1); the estimate
# S(j) fills the bins from the top with n_b tokens each valued at m_b (piecewise linear in j: the cumulative mass
# against the cumulative estimated count, interpolated at j), and the top-k mass is p_top + S(k - 1). Each value and
# each count is off by at most that factor, and the greedy fill is monotone and scales with the counts, so S(j) lies
# within a factor rho of the exact mass of the tail's j largest values: the top-k mass is within
# 2^-(23 - BIN_SHIFT) x (the mass of tokens 2..k) of the exact one. Bins below TOPK_FLOOR are left out of the fill
# (at most (k - 1) TOPK_FLOOR of mass).
#
# Rounding. A bin's mass is a float32 sum in token order (the scorer's scatter_add_; the reference's np.add.at adds in
# the same order), minus p_top in p_top's bin, floored at 0: in float64 the V-wide copy and accumulation cost as
# much as the rest of the histogram. Recursive summation of n >= 0 terms has relative error at most
# gamma_(n-1) = (n - 1) u / (1 - (n - 1) u), u = 2^-24 (Higham, Accuracy and Stability, 2nd ed., section 4.2), and
# a bin holds n <= V tokens, so each bin's tail mass is off by at most gamma_(V-1) of the bin's whole mass (p_top
# included) and the binned term by at most gamma_(V-1) of sum_b (M_b + [p_top in b]) k_b. That worst case needs tens
# of thousands of tokens in one bin (a near-uniform p: measured 4e-4 relative at V = 49,152, where the rigorous bound
# is 2.9e-3); an LM's p spreads over hundreds of bins and its sums round at ~1e-7. The float64 dot products and
# cumulative sums add ~1e-15. The results are clipped to [a, a + Delta] and [0, 1] (they can only leave those ranges
# through these errors).

BIN_SHIFT = 17  # 64 bins per octave: the entropy within 0.008 nats x (1 - p_top), the top-k mass within 1/64
N_BINS = (np.float32(1.0).view(np.uint32) >> BIN_SHIFT) + 1  # p <= 1: bins 0 .. bits(1.0) >> BIN_SHIFT
TOPK_FLOOR = 2.0**-40  # bins below it are left out of the top-k fill: at most 99 x 2^-40 = 9e-11 of mass for k <= 100
FLOOR_BIN = int(np.float32(TOPK_FLOOR).view(np.uint32) >> BIN_SHIFT)
ENTROPY_FLOOR = 2.0**-60  # bins below it enter the entropy at k = 1, by their total mass (note above)
ENTROPY_FLOOR_BIN = int(np.float32(ENTROPY_FLOOR).view(np.uint32) >> BIN_SHIFT)

CENTRING = (
    f"entropy (bits) of the smoothed prediction, exact for the most probable token and, for the others, from a "
    f"histogram of float32 p with {2 ** (23 - BIN_SHIFT)} bins per octave (each token at its bin's midpoint; within "
    f"{2.0 ** -(24 - BIN_SHIFT) / LN2:.4f} bits x (1 - p_top)), bin masses summed in float32 (relative rounding at "
    "most (V - 1) x 2^-24), clipped to [a, a + Delta]; top-k centring: 1 - (p_top + the mass of the k - 1 next "
    f"tokens read from the same histogram, bin counts M_b / midpoint_b; within 2^-{23 - BIN_SHIFT} of the exact "
    "mass of tokens 2..k), clipped to [0, 1]"
)


def summation_error(vocab_size: int) -> float:
    """gamma_(n-1) for n = V: the largest relative rounding of a bin's float32 mass (note above)."""
    n = max(vocab_size - 1, 0) * 2.0**-24
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
    """(N_BINS - ENTROPY_FLOOR_BIN, n_alphas) float64: k(r_alpha * midpoint), the per-unit-mass term of a token in
    each bin from ENTROPY_FLOOR up (the bins below it weigh 1)."""
    mids = bin_midpoints()[ENTROPY_FLOOR_BIN:]
    out = np.empty((len(mids), len(alphas)))
    for j, alpha in enumerate(alphas):
        alpha = check_alpha(alpha)
        out[:, j] = _k((1.0 - alpha) * vocab_size / alpha * mids)
    return out


def tail_histogram(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p_top, hist): the largest float32 p of each distribution (rows, float32) and the float32 masses of the
    others per bin (rows, N_BINS), summed in token order, p_top then taken out of its own bin (note above)."""
    p = np.asarray(probs, dtype=np.float32)
    flat = p.reshape(-1, p.shape[-1])
    top = flat.max(axis=-1)
    hist = np.zeros((len(flat), N_BINS), dtype=np.float32)
    rows = np.arange(len(flat))
    np.add.at(hist, (rows[:, None], flat.view(np.uint32) >> BIN_SHIFT), flat)  # as the scorer's scatter_add_
    top_bin = top.view(np.uint32) >> BIN_SHIFT
    hist[rows, top_bin] = np.maximum(hist[rows, top_bin] - top, np.float32(0.0))
    return top, hist


def entropy_from_histogram(top: np.ndarray, hist: np.ndarray, alpha: float, vocab: int) -> np.ndarray:
    """The entropy centring (bits) from `tail_histogram`'s p_top and histogram (note above), clipped."""
    alpha = check_alpha(alpha)
    rate = (1.0 - alpha) * vocab / alpha
    top = top.astype(np.float64)
    binned = hist[:, ENTROPY_FLOOR_BIN:].astype(np.float64) @ _k(rate * bin_midpoints()[ENTROPY_FLOOR_BIN:])
    binned += hist[:, :ENTROPY_FLOOR_BIN].sum(axis=-1, dtype=np.float64)  # k = 1 below ENTROPY_FLOOR
    h_nats = np.log(vocab / alpha) - (1.0 - alpha) * (top * _k(rate * top) + binned)
    a = -np.log2(1.0 - alpha + alpha / vocab)
    return np.clip(h_nats / LN2, a, np.log2(vocab / alpha))


def outside_from_histogram(top: np.ndarray, hist: np.ndarray, ks, vocab: int) -> np.ndarray:
    """(rows, n_ks): 1 - the estimated mass of the k most probable tokens (note above), clipped to [0, 1]; 0 where
    k >= V (nothing is outside)."""
    mids = bin_midpoints()[FLOOR_BIN:][::-1]  # descending p
    mass = hist[:, FLOOR_BIN:][:, ::-1].astype(np.float64)
    count = np.cumsum(mass / mids, axis=-1)
    cum_mass = np.cumsum(mass, axis=-1)
    out = np.empty((len(hist), len(ks)))
    for j, k in enumerate(ks):
        want = float(k - 1)
        idx = np.sum(count < want, axis=-1)  # the first bin whose cumulative count reaches k - 1
        rows = np.arange(len(hist))
        before = idx - 1
        prev_count = np.where(idx > 0, count[rows, np.maximum(before, 0)], 0.0)
        prev_mass = np.where(idx > 0, cum_mass[rows, np.maximum(before, 0)], 0.0)
        slope = np.where(idx < len(mids), mids[np.minimum(idx, len(mids) - 1)], 0.0)
        in_top = top.astype(np.float64) + prev_mass + (want - prev_count) * slope
        out[:, j] = 0.0 if k >= vocab else np.clip(1.0 - in_top, 0.0, 1.0)
    return out


def _from_histograms(probs: np.ndarray, centrings, per_row: tuple[int, ...] = ()) -> np.ndarray:
    """centrings(p_top, hist, V) -> (rows, *per_row) applied to distributions along the last axis, 256 histograms
    (8 MB) at a time; the result is (*leading shape of probs, *per_row)."""
    p = np.asarray(probs, dtype=np.float64)
    flat = p.reshape(-1, p.shape[-1])
    parts = [centrings(*tail_histogram(flat[start : start + 256]), p.shape[-1]) for start in range(0, len(flat), 256)]
    out = np.concatenate(parts) if parts else np.empty((0, *per_row))
    return out.reshape(*p.shape[:-1], *per_row)


def binned_smoothed_entropy_bits(probs: np.ndarray, alpha: float) -> np.ndarray:
    """The shipped entropy centring (numpy reference of the scorer's torch code): see CENTRING and the note above.

    `probs` are distributions along the last axis; they are rounded to float32 for the binning and the bins' sums,
    as the scorer's are. Depends on p only (never on the target), and lies in [a, a + Delta].
    """
    return _from_histograms(probs, lambda top, hist, vocab: entropy_from_histogram(top, hist, alpha, vocab))


def binned_outside_topk(probs: np.ndarray, ks) -> np.ndarray:
    """The shipped top-k centrings (numpy reference of the scorer's torch code), (..., n_ks): 1 - the estimated
    mass of the k most probable tokens (note above). Depends on p only, and lies in [0, 1]."""
    return _from_histograms(probs, lambda top, hist, vocab: outside_from_histogram(top, hist, ks, vocab), (len(ks),))
