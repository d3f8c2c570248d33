"""The entropy-centred empirical-Bernstein token bound (docs/statistics.md, "The `eb` bound").

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
level delta1 * P(h) / N and a union bound over h (weights P(h)) and over the N candidates (the lambda grid
Lambda, and the Azuma point below: N = |Lambda| + 1) give, with probability >= 1 - delta1, for every h and
every lambda in the grid Lambda at once:

    R <= R_hat + Delta * [ L / (lambda m) + (psi(lambda) / lambda) * v ],
    L  = log 1/P(h) + ln(N / delta1).

Subsampling. R_hat + Delta (psi(lambda)/lambda) v is the population mean over the m tokens of

    Z_i(lambda) = l_i + Delta * (psi(lambda) / lambda) * xi_i^2   in [a, a + Delta (1 + psi(lambda)/lambda)],

and a sampled unit (one token drawn uniformly, or a block drawn with probability proportional to its length:
docs/statistics.md, "Sampling units") has that population mean as its expectation; its value is the unit's mean of
l and of xi^2.
So one UCB of mean Z per lambda gives the bound at that lambda.

The Azuma point. The paper's bound (Azuma-Hoeffding on the same martingale differences, `lotfi.py`),

    R <= UCB(mean l) + Delta * sqrt(L / (2 m)),

is one more candidate, with the same L (so its own delta1 share is delta1 / (|Lambda| + 1)) and its own UCB
of the mean unit loss at delta2 / (|Lambda| + 1), with the same UCB as the lambda points. With the Azuma
point the candidate set has |Lambda| + 1 points and

    L = log 1/P(h) + ln((|Lambda| + 1) / delta1),      every UCB at delta2 / (|Lambda| + 1),

and with probability >= 1 - delta1 - delta2 every candidate holds at once, so their minimum does:

    R <= min( min over lambda of UCB_Z(lambda) + Delta * L / (lambda m),  UCB(mean l) + Delta sqrt(L / (2m)) ).

The minimum is valid because every candidate is covered by both union bounds (the candidates are fixed in
advance: `default_lambda_grid`, plus the Azuma point). So eb is never looser than the paper's bound with the
same (delta1, delta2, ucb) by more than the union's cost: the paper's bound evaluated at delta1/(|Lambda|+1),
delta2/(|Lambda|+1) instead of delta1, delta2. Without the Azuma point (azuma=False) eb is worse than the
paper's bound once L/m is large (roughly L/m >= 0.5: the lambda term is >= L/(0.9 m) there), which is why it
is on by default. With exhaustive evaluation R_hat and v are exact, delta2 = 0 and there are no UCBs.

Top-k error: the same theorem with a = 0, Delta = 1, l_i = 1[x_i not among the model's k most probable
tokens] and the centring c_i = the model's probability mass outside its top k, as the scorer estimates it from its
histogram of p (`centring.py`): any predictable value in [0, 1] will do.

The lambda grid fixed in advance, and why it is uniform in the logit, are in `lambda_grid.py`; the centring c_i
(the entropy of the smoothed prediction) and why it is >= a, in `centring.py`.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np

from tokenbounds.stats.lambda_grid import check_lambda_grid
from tokenbounds.stats.subsample import get_ucb

_RANGE_TOLERANCE = 1e-9


def psi(lam):
    """psi(lambda) = -ln(1 - lambda) - lambda (>= 0, ~ lambda^2 / 2 for small lambda)."""
    lam = np.asarray(lam, dtype=np.float64)
    return -np.log1p(-lam) - lam


@dataclass(frozen=True)
class EBBound:
    """One statistic's EB bound with its bookkeeping (all losses in bits per token, logs in nats)."""

    bound: float
    lam: float | None  # the grid value at which the minimum is attained; None when the Azuma point won
    empirical_loss: float  # mean unit loss (R_hat_s), or the exact R_hat when exhaustive
    mean_sq: float  # mean of ((c - l) / Delta)^2 over the units (v_hat), or the exact v
    complexity_term: float  # Delta * L / (lam * m); Delta * sqrt(L / (2m)) at the Azuma point
    variance_term: float  # Delta * (psi(lam) / lam) * mean_sq; 0 at the Azuma point
    subsample_slack: float  # UCB of mean Z (of mean l at the Azuma point) minus its sample mean (0 when exhaustive)
    complexity_nats: float  # log 1/P(h)
    log_term_nats: float  # L = log 1/P(h) + ln(n_points / delta1)
    delta1: float
    delta2: float  # 0 when exhaustive
    delta2_per_lambda: float  # delta2 / n_points: the level of each candidate's UCB
    n_lambdas: int
    n_units: int | None  # None when exhaustive
    m: int
    a: float
    delta_range: float
    ucb: str | None  # None when exhaustive
    point: str = "lambda"  # which candidate won: "lambda" (a grid point) or "azuma"
    n_points: int = 0  # candidates in the union: n_lambdas + 1 with the Azuma point

    def as_dict(self) -> dict:
        return asdict(self)


def _check_common(complexity_nats, m, delta_range, delta1, lambdas, azuma=True):
    """(grid, L, number of candidates) with L = log 1/P(h) + ln(n_points / delta1)."""
    if not (np.isfinite(complexity_nats) and complexity_nats >= 0):
        raise ValueError(f"complexity (log 1/P(h), nats) must be finite and >= 0, got {complexity_nats}")
    if int(m) != m or m < 1:
        raise ValueError(f"m (tokens in the corpus) must be a positive integer, got {m}")
    if not (np.isfinite(delta_range) and delta_range > 0):
        raise ValueError(f"Delta must be > 0, got {delta_range}")
    if not 0.0 < delta1 < 1.0:
        raise ValueError(f"delta1 must lie in (0, 1), got {delta1}")
    lam = check_lambda_grid(lambdas)
    n_points = lam.size + (1 if azuma else 0)
    log_term = float(complexity_nats) + math.log(n_points / delta1)
    return lam, log_term, n_points


def azuma_term(delta_range: float, log_term: float, m: int) -> float:
    """Delta * sqrt(L / (2 m)): the Azuma-Hoeffding martingale term with L = log 1/P(h) + ln(n_points / delta1)."""
    return float(delta_range) * math.sqrt(log_term / (2.0 * m))


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
    azuma: bool = True,
    horizon: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised core of `eb_bound` over leading batch axes: unit arrays of shape (..., n), draws in order.

    Returns (bound, index of the best candidate, UCB of that candidate's mean), each of shape (...). Index
    k < len(lambdas) is the grid point lambdas[k] (UCB of mean Z); index len(lambdas) is the Azuma point (UCB
    of the mean loss). azuma=False drops the Azuma point (the union is then over the grid alone). horizon: the UCB's
    anytime-valid form for a data-dependent number of draws (tokenbounds.stats.subsample.get_ucb).
    """
    lam, log_term, n_points = _check_common(complexity_nats, m, delta_range, delta1, lambdas, azuma)
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
    widths = z_width
    if azuma:  # one more row: the unit losses themselves, on [a, a + Delta]
        z01 = np.concatenate([z01, ((loss - a) / delta_range)[..., None, :]], axis=-2)
        widths = np.append(z_width, delta_range)
    ucb01 = np.asarray(get_ucb(ucb, horizon)(np.clip(z01, 0.0, 1.0), 0.0, 1.0, delta2 / n_points))
    ucbs = a + widths * ucb01  # (..., n_points)
    martingale = delta_range * log_term / (lam * m)
    if azuma:
        martingale = np.append(martingale, azuma_term(delta_range, log_term, m))
    bounds = ucbs + martingale
    best = np.argmin(bounds, axis=-1)
    take = np.take_along_axis
    return (
        take(bounds, best[..., None], -1)[..., 0],
        best,
        take(ucbs, best[..., None], -1)[..., 0],
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
    azuma: bool = True,
) -> EBBound:
    """EB bound from a subsample: one value per sampled unit, in sampling order.

    unit_loss[j]: the unit's mean smoothed loss (bits), in [a, a + Delta];
    unit_sq[j]:   the unit's mean of ((c_i - l_i) / Delta)^2, in [0, 1];
    complexity_nats = log 1/P(h); m = tokens in the corpus; lambdas = the grid fixed in advance;
    delta1, delta2 = this statistic's martingale and subsampling shares (both are split over the |Lambda| + 1
    candidates here: the grid and the Azuma point; azuma=False leaves the Azuma point out).
    """
    loss = np.asarray(unit_loss, dtype=np.float64)
    sq = np.asarray(unit_sq, dtype=np.float64)
    if loss.ndim != 1:
        raise ValueError("eb_bound takes 1-D unit arrays; use eb_bounds_batch for batches")
    kw = dict(a=a, delta_range=delta_range, complexity_nats=complexity_nats, m=m, delta1=delta1, delta2=delta2, ucb=ucb)
    bound, best, best_ucb = eb_bounds_batch(loss, sq, lambdas=lambdas, azuma=azuma, **kw)
    lam_grid, log_term, n_points = _check_common(complexity_nats, m, delta_range, delta1, lambdas, azuma)
    mean_loss, mean_sq = float(loss.mean()), float(sq.mean())
    n_units = int(loss.size)
    return _record(bound, best, best_ucb, lam_grid, log_term, n_points, mean_loss, mean_sq, n_units=n_units, **kw)


def eb_exhaustive_batch(
    mean_loss,
    mean_sq,
    *,
    a: float,
    delta_range: float,
    complexity_nats: float,
    m: int,
    lambdas,
    delta1: float,
    azuma: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised core of `eb_bound_exhaustive` over any batch shape: (bound, index of the best candidate).

    Candidates: R_hat + Delta [(psi(lambda)/lambda) v + L / (lambda m)] for each grid lambda (index k < |Lambda|),
    and the Azuma point R_hat + Delta sqrt(L / (2m)) (index |Lambda|), with L over all |Lambda| + 1 of them.
    """
    lam, log_term, _ = _check_common(complexity_nats, m, delta_range, delta1, lambdas, azuma)
    loss = _check_units(mean_loss, a, a + delta_range, "the mean loss")
    sq = _check_units(mean_sq, 0.0, 1.0, "the mean of ((c - l)/Delta)^2")
    if loss.shape != sq.shape:
        raise ValueError(f"exact means of different shapes: {loss.shape}, {sq.shape}")
    ratio = psi(lam) / lam
    bounds = loss[..., None] + delta_range * (ratio * sq[..., None] + log_term / (lam * m))
    if azuma:
        bounds = np.concatenate([bounds, (loss + azuma_term(delta_range, log_term, m))[..., None]], axis=-1)
    best = np.argmin(bounds, axis=-1)
    return np.take_along_axis(bounds, best[..., None], -1)[..., 0], best


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
    azuma: bool = True,
) -> EBBound:
    """EB bound when every token was scored: exact R_hat and v, no subsampling term (delta2 = 0).

    The minimum over the grid and the Azuma point R_hat + Delta sqrt(L / (2m)), L over |Lambda| + 1 candidates.
    """
    lam_grid, log_term, n_points = _check_common(complexity_nats, m, delta_range, delta1, lambdas, azuma)
    kw = dict(a=a, delta_range=delta_range, complexity_nats=complexity_nats, m=m, delta1=delta1)
    bound, best = eb_exhaustive_batch(mean_loss, mean_sq, lambdas=lam_grid, azuma=azuma, **kw)
    mean_loss = float(_check_units(mean_loss, a, a + delta_range, "the mean loss"))
    mean_sq = float(_check_units(mean_sq, 0.0, 1.0, "the mean of ((c - l)/Delta)^2"))
    exhaustive = dict(n_units=None, delta2=0.0, ucb=None)  # no subsample: no UCB, no subsampling share
    return _record(bound, best, None, lam_grid, log_term, n_points, mean_loss, mean_sq, **exhaustive, **kw)


def _record(bound, best, best_ucb, lam_grid, log_term, n_points, mean_loss, mean_sq, **kw) -> EBBound:
    """The EBBound of the winning candidate `best` (index |Lambda| is the Azuma point); best_ucb None = exhaustive.

    The terms are those of that candidate: at a grid lambda, Delta L / (lambda m) and the variance term, and the
    UCB's slack over mean Z = mean loss + variance term; at the Azuma point, Delta sqrt(L / (2m)), no variance term
    and the UCB's slack over the mean loss.
    """
    m, delta_range = kw["m"], kw["delta_range"]
    azuma = int(best) == lam_grid.size
    if azuma:
        lam, complexity, variance = None, azuma_term(delta_range, log_term, m), 0.0
    else:
        lam = float(lam_grid[int(best)])
        complexity = delta_range * log_term / (lam * m)
        variance = delta_range * (float(psi(lam)) / lam) * mean_sq
    return EBBound(
        bound=float(bound),
        lam=lam,
        empirical_loss=mean_loss,
        mean_sq=mean_sq,
        complexity_term=complexity,
        variance_term=variance,
        subsample_slack=0.0 if best_ucb is None else float(best_ucb) - (mean_loss + variance),
        complexity_nats=float(kw["complexity_nats"]),
        log_term_nats=log_term,
        delta1=float(kw["delta1"]),
        delta2=float(kw["delta2"]),
        delta2_per_lambda=float(kw["delta2"]) / n_points,
        n_lambdas=int(lam_grid.size),
        n_units=kw["n_units"],
        m=int(m),
        a=float(kw["a"]),
        delta_range=float(delta_range),
        ucb=kw["ucb"],
        point="azuma" if azuma else "lambda",
        n_points=n_points,
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
    azuma: bool = True,
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
        azuma=azuma,
    )


def eb_topk_bound_exhaustive(
    mean_error: float, mean_sq: float, *, complexity_nats: float, m: int, lambdas, delta1: float, azuma: bool = True
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
        azuma=azuma,
    )
