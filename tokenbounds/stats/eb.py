"""The entropy-centred empirical-Bernstein token bound (DESIGN §3.2), and the smoothed-entropy centring.

Setting. Tokens x_1..x_m, a hypothesis h with prior mass P(h), smoothed losses l_i in [a, a + Delta] (bits),
a centring c_i = c(x_<i) >= a that is predictable (a function of the past only), and

    xi_i = (c_i - l_i) / Delta  >= -1,      psi(lambda) = -ln(1 - lambda) - lambda,
    R = (1/m) sum_i E[l_i | x_<i],  R_hat = (1/m) sum_i l_i,  v = (1/m) sum_i xi_i^2  in [0, 1].

Theorem (martingale term). For lambda in (0, 1) and xi >= -1, Fan, Grama & Liu (2012, Lemma 4.1) give
exp(lambda xi - psi(lambda) xi^2) <= 1 + lambda xi. Taking conditional expectations,
E[exp(lambda xi_i - psi xi_i^2) | x_<i] <= 1 + lambda E[xi_i | x_<i] <= exp(lambda E[xi_i | x_<i]), so

    M_m = exp( lambda sum_i (xi_i - E[xi_i | x_<i]) - psi(lambda) sum_i xi_i^2 )

is a non-negative supermartingale with M_0 = 1 (Howard, Ramdas, McAuliffe & Sekhon 2021, Ann. Statist.,
Theorem 4 / Fact 1). Since xi_i - E[xi_i | x_<i] = (E[l_i | x_<i] - l_i) / Delta, Markov's inequality at
level delta1 * P(h) / |Lambda| and a union bound over h (weights P(h)) and over the lambda grid give, with
probability >= 1 - delta1, for every h and every lambda in the grid Lambda at once:

    R <= R_hat + Delta * [ L / (lambda m) + (psi(lambda) / lambda) * v ],
    L  = log 1/P(h) + ln(|Lambda| / delta1).

Subsampling. R_hat + Delta (psi(lambda)/lambda) v is the population mean over the m tokens of

    Z_i(lambda) = l_i + Delta * (psi(lambda) / lambda) * xi_i^2   in [a, a + Delta (1 + psi(lambda)/lambda)],

and a sampled unit (one token drawn uniformly, or a block drawn with probability proportional to its length,
DESIGN §3.3) has that population mean as its expectation; its value is the unit's mean of l and of xi^2.
So one UCB of mean Z per lambda, each at level delta2 / |Lambda|, gives with probability >= 1 - delta2

    R <= min over lambda of  UCB_Z(lambda) + Delta * L / (lambda m).

Taking the minimum is valid because every lambda in the grid is covered by both union bounds (the grid is
fixed in advance: `default_lambda_grid`). With exhaustive evaluation R_hat and v are exact and delta2 = 0.

Who splits delta. The caller divides the total delta over the reported statistics (one per smoothing alpha,
one per top-k; e.g. `lotfi.split_delta`) and hands this function the shares of ONE statistic: delta1 (its
martingale share) and delta2 (its subsampling share). This module then divides delta1 over the lambda grid
(inside L, as ln(|Lambda| / delta1)) and delta2 over the lambda grid (one UCB per lambda at delta2/|Lambda|).
A union over an alpha grid A with equal shares is the same as the design's ln(|A| |Lambda| / delta1).

Top-k error: the same theorem with a = 0, Delta = 1, l_i = 1[x_i not among the model's k most probable
tokens] and the centring c_i = the model's probability mass outside its top k (predictable, in [0, 1]).

Centring. The recommended c_i is the entropy (bits) of the smoothed prediction q = (1 - alpha) p + alpha/V.
It is >= a by construction: the Shannon entropy is at least the min-entropy, H(q) >= -log2 max_y q(y),
and max_y q(y) = (1 - alpha) max_y p(y) + alpha/V <= 1 - alpha + alpha/V, so
H(q) >= -log2(1 - alpha + alpha/V) = a.
An unsmoothed entropy would not be (it is 0 for a one-hot p while a > 0). `smoothed_entropy_bits` is the
numpy reference of what the scorer computes in torch.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np

from tokenbounds.stats.smoothing import LN2, check_alpha
from tokenbounds.stats.subsample import get_ucb

_RANGE_TOLERANCE = 1e-9


def psi(lam):
    """psi(lambda) = -ln(1 - lambda) - lambda (>= 0, ~ lambda^2 / 2 for small lambda)."""
    lam = np.asarray(lam, dtype=np.float64)
    return -np.log1p(-lam) - lam


def default_lambda_grid(n: int = 20, smallest: float = 1e-4, largest: float = 0.9) -> np.ndarray:
    """A geometric lambda grid fixed in advance (not data-dependent): n values from smallest to largest.

    With the default 20 values neighbours differ by a factor 1.61, so the bound at the best grid point is
    within ~3% (in the leading term) of the bound at the best continuous lambda, for ln 20 = 3 nats in L.
    """
    if n < 1:
        raise ValueError("the lambda grid needs at least one value")
    if not 0.0 < smallest <= largest < 1.0:
        raise ValueError(f"need 0 < smallest <= largest < 1, got {smallest}, {largest}")
    if n == 1:
        return np.array([largest])
    return np.geomspace(smallest, largest, n)


def check_lambda_grid(lambdas) -> np.ndarray:
    """The grid as a 1-D float array; ValueError unless non-empty, finite, in (0, 1), without repeats."""
    lam = np.asarray(lambdas, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"the lambda grid must be a non-empty 1-D sequence, got shape {lam.shape}")
    if not np.all(np.isfinite(lam)) or np.any(lam <= 0.0) or np.any(lam >= 1.0):
        raise ValueError(f"every lambda must lie in (0, 1), got {lam.tolist()}")
    if np.unique(lam).size != lam.size:
        raise ValueError("the lambda grid has repeated values")
    return lam


def smoothed_entropy_bits(probs: np.ndarray, alpha: float) -> np.ndarray:
    """Entropy (bits) of q = (1 - alpha) p + alpha / V, for distributions p along the last axis."""
    alpha = check_alpha(alpha)
    p = np.asarray(probs, dtype=np.float64)
    vocab = p.shape[-1]
    q = (1.0 - alpha) * p + alpha / vocab  # > 0 everywhere, so q log q needs no special case
    return -np.sum(q * np.log(q), axis=-1) / LN2


@dataclass(frozen=True)
class EBBound:
    """One statistic's EB bound with its bookkeeping (all losses in bits per token, logs in nats)."""

    bound: float
    lam: float  # the grid value at which the minimum is attained
    empirical_loss: float  # mean unit loss (R_hat_s), or the exact R_hat when exhaustive
    mean_sq: float  # mean of ((c - l) / Delta)^2 over the units (v_hat), or the exact v
    complexity_term: float  # Delta * L / (lam * m)
    variance_term: float  # Delta * (psi(lam) / lam) * mean_sq
    subsample_slack: float  # UCB of mean Z minus its sample mean (0 when exhaustive)
    complexity_nats: float  # log 1/P(h)
    log_term_nats: float  # L = log 1/P(h) + ln(|Lambda| / delta1)
    delta1: float
    delta2: float  # 0 when exhaustive
    delta2_per_lambda: float
    n_lambdas: int
    n_units: int | None  # None when exhaustive
    m: int
    a: float
    delta_range: float
    ucb: str | None  # None when exhaustive

    def as_dict(self) -> dict:
        return asdict(self)


def _check_common(complexity_nats, m, delta_range, delta1, lambdas):
    if not (np.isfinite(complexity_nats) and complexity_nats >= 0):
        raise ValueError(f"complexity (log 1/P(h), nats) must be finite and >= 0, got {complexity_nats}")
    if int(m) != m or m < 1:
        raise ValueError(f"m (tokens in the corpus) must be a positive integer, got {m}")
    if not (np.isfinite(delta_range) and delta_range > 0):
        raise ValueError(f"Delta must be > 0, got {delta_range}")
    if not 0.0 < delta1 < 1.0:
        raise ValueError(f"delta1 must lie in (0, 1), got {delta1}")
    lam = check_lambda_grid(lambdas)
    log_term = float(complexity_nats) + math.log(lam.size / delta1)
    return lam, log_term


def _check_units(values, lo, hi, what):
    x = np.asarray(values, dtype=np.float64)
    tol = _RANGE_TOLERANCE * max(1.0, abs(hi - lo))
    if x.size and (not np.all(np.isfinite(x)) or x.min() < lo - tol or x.max() > hi + tol):
        raise ValueError(f"{what} must lie in [{lo}, {hi}]")
    return np.clip(x, lo, hi)


def eb_bounds_batch(
    unit_loss: np.ndarray,
    unit_sq: np.ndarray,
    *,
    a: float,
    delta_range: float,
    complexity_nats: float,
    m: int,
    lambdas,
    delta1: float,
    delta2: float,
    ucb: str = "betting",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised core of `eb_bound` over leading batch axes: unit arrays of shape (..., n), draws in order.

    Returns (bound, index of the best lambda, UCB of mean Z at that lambda), each of shape (...).
    """
    lam, log_term = _check_common(complexity_nats, m, delta_range, delta1, lambdas)
    if not 0.0 < delta2 < 1.0:
        raise ValueError(f"delta2 must lie in (0, 1), got {delta2}")
    loss = _check_units(unit_loss, a, a + delta_range, "unit losses")
    sq = _check_units(unit_sq, 0.0, 1.0, "unit means of ((c - l)/Delta)^2")
    if loss.shape != sq.shape or loss.ndim == 0 or loss.shape[-1] < 1:
        raise ValueError(f"unit losses and squared terms need one shared shape (..., n), got {loss.shape}, {sq.shape}")
    ratio = psi(lam) / lam  # (K,)
    z_width = delta_range * (1.0 + ratio)  # range of Z for each lambda
    # Z scaled to [0, 1] per lambda: shape (..., K, n); every UCB here is affine-equivariant
    z01 = ((loss - a)[..., None, :] + delta_range * ratio[:, None] * sq[..., None, :]) / z_width[:, None]
    ucb01 = np.asarray(get_ucb(ucb)(np.clip(z01, 0.0, 1.0), 0.0, 1.0, delta2 / lam.size))
    ucb_z = a + z_width * ucb01  # (..., K)
    bounds = ucb_z + delta_range * log_term / (lam * m)
    best = np.argmin(bounds, axis=-1)
    take = np.take_along_axis
    return (
        take(bounds, best[..., None], -1)[..., 0],
        best,
        take(ucb_z, best[..., None], -1)[..., 0],
    )


def eb_bound(
    unit_loss: np.ndarray,
    unit_sq: np.ndarray,
    *,
    a: float,
    delta_range: float,
    complexity_nats: float,
    m: int,
    lambdas,
    delta1: float,
    delta2: float,
    ucb: str = "betting",
) -> EBBound:
    """EB bound from a subsample: one value per sampled unit, in sampling order.

    unit_loss[j]: the unit's mean smoothed loss (bits), in [a, a + Delta];
    unit_sq[j]:   the unit's mean of ((c_i - l_i) / Delta)^2, in [0, 1];
    complexity_nats = log 1/P(h); m = tokens in the corpus; lambdas = the grid fixed in advance;
    delta1, delta2 = this statistic's martingale and subsampling shares (both are split over the grid here).
    """
    loss = np.asarray(unit_loss, dtype=np.float64)
    sq = np.asarray(unit_sq, dtype=np.float64)
    if loss.ndim != 1:
        raise ValueError("eb_bound takes 1-D unit arrays; use eb_bounds_batch for batches")
    bound, best, ucb_z = eb_bounds_batch(
        loss,
        sq,
        a=a,
        delta_range=delta_range,
        complexity_nats=complexity_nats,
        m=m,
        lambdas=lambdas,
        delta1=delta1,
        delta2=delta2,
        ucb=ucb,
    )
    lam_grid, log_term = _check_common(complexity_nats, m, delta_range, delta1, lambdas)
    lam = float(lam_grid[int(best)])
    ratio = float(psi(lam)) / lam
    mean_loss, mean_sq = float(loss.mean()), float(sq.mean())
    mean_z = mean_loss + delta_range * ratio * mean_sq
    return EBBound(
        bound=float(bound),
        lam=lam,
        empirical_loss=mean_loss,
        mean_sq=mean_sq,
        complexity_term=delta_range * log_term / (lam * m),
        variance_term=delta_range * ratio * mean_sq,
        subsample_slack=float(ucb_z) - mean_z,
        complexity_nats=float(complexity_nats),
        log_term_nats=log_term,
        delta1=float(delta1),
        delta2=float(delta2),
        delta2_per_lambda=float(delta2) / lam_grid.size,
        n_lambdas=int(lam_grid.size),
        n_units=int(loss.size),
        m=int(m),
        a=float(a),
        delta_range=float(delta_range),
        ucb=ucb,
    )


def eb_bound_exhaustive(
    mean_loss: float,
    mean_sq: float,
    *,
    a: float,
    delta_range: float,
    complexity_nats: float,
    m: int,
    lambdas,
    delta1: float,
) -> EBBound:
    """EB bound when every token was scored: exact R_hat and v, no subsampling term (delta2 = 0)."""
    lam_grid, log_term = _check_common(complexity_nats, m, delta_range, delta1, lambdas)
    mean_loss = float(_check_units(mean_loss, a, a + delta_range, "the mean loss"))
    mean_sq = float(_check_units(mean_sq, 0.0, 1.0, "the mean of ((c - l)/Delta)^2"))
    ratio = psi(lam_grid) / lam_grid
    bounds = mean_loss + delta_range * (ratio * mean_sq + log_term / (lam_grid * m))
    best = int(np.argmin(bounds))
    lam = float(lam_grid[best])
    return EBBound(
        bound=float(bounds[best]),
        lam=lam,
        empirical_loss=mean_loss,
        mean_sq=mean_sq,
        complexity_term=delta_range * log_term / (lam * m),
        variance_term=delta_range * float(ratio[best]) * mean_sq,
        subsample_slack=0.0,
        complexity_nats=float(complexity_nats),
        log_term_nats=log_term,
        delta1=float(delta1),
        delta2=0.0,
        delta2_per_lambda=0.0,
        n_lambdas=int(lam_grid.size),
        n_units=None,
        m=int(m),
        a=float(a),
        delta_range=float(delta_range),
        ucb=None,
    )


def eb_topk_bound(
    unit_error: np.ndarray,
    unit_sq: np.ndarray,
    *,
    complexity_nats: float,
    m: int,
    lambdas,
    delta1: float,
    delta2: float,
    ucb: str = "betting",
) -> EBBound:
    """EB bound on the top-k error rate: a = 0, Delta = 1, centring = the model's mass outside its top k.

    unit_error[j]: the unit's mean of 1[target not in the top k]; unit_sq[j]: its mean of (c_i - err_i)^2.
    """
    return eb_bound(
        unit_error,
        unit_sq,
        a=0.0,
        delta_range=1.0,
        complexity_nats=complexity_nats,
        m=m,
        lambdas=lambdas,
        delta1=delta1,
        delta2=delta2,
        ucb=ucb,
    )


def eb_topk_bound_exhaustive(
    mean_error: float, mean_sq: float, *, complexity_nats: float, m: int, lambdas, delta1: float
) -> EBBound:
    """Top-k EB bound from exact population means (every token scored)."""
    return eb_bound_exhaustive(
        mean_error,
        mean_sq,
        a=0.0,
        delta_range=1.0,
        complexity_nats=complexity_nats,
        m=m,
        lambdas=lambdas,
        delta1=delta1,
    )
