"""Upper confidence bounds (UCBs) for the mean of i.i.d. draws with values in a known range [lo, hi].

Every function here has the signature ``ucb(values, lo, hi, delta)`` and returns u with
P(E[X] <= u) >= 1 - delta when ``values`` are n i.i.d. draws of X in [lo, hi]. ``values`` may carry leading
batch axes, shape (..., n): each row is then an independent problem and the result has shape (...);
a 1-D input gives a float. All three bounds are affine-equivariant, so each one is computed for
x = (values - lo) / (hi - lo) in [0, 1] and mapped back; a result above hi is replaced by hi (safe: the
mean cannot exceed hi), nothing is ever moved down.

hoeffding (Hoeffding 1963, Theorem 1 / 2):

    u = mean + (hi - lo) * sqrt(ln(1/delta) / (2 n))

maurer-pontil (Maurer & Pontil 2009, "Empirical Bernstein bounds and sample variance penalization",
Theorem 4; n >= 2):

    u = mean + sqrt(2 V_n ln(2/delta) / n) + 7 (hi - lo) ln(2/delta) / (3 (n - 1))

with V_n = sum_i (X_i - mean)^2 / (n - 1) the unbiased sample variance. The ln(2/delta) (not ln(1/delta)) is
the theorem's: delta/2 goes to Bennett's inequality and delta/2 to the upper bound on the true variance.

betting (Waudby-Smith & Ramdas 2024, JRSS-B 86(1), "Estimating means of bounded random variables by
betting", Section 4, the hedged capital process with predictable plug-in bets, in its fixed-n form, with the
running intersection of their Section 3): for a candidate mean m in [0, 1], the capital after t draws of a
gambler who bets against "mean >= m",

    K_t(m) = prod_{i=1..t} (1 - lambda_i(m) * (x_i - m)),      K_0(m) = 1,

is a non-negative martingale when the true mean is m (each factor has conditional mean 1 because
lambda_i(m) depends only on x_1..x_{i-1}), and a supermartingale when the true mean is >= m. Ville's
inequality for a non-negative supermartingale with K_0 = 1 bounds its whole path, not only its end:
P(sup_t K_t(mu) >= 1/delta) <= delta (Ville 1939: Markov's inequality in its maximal form). So

    u = inf { m in [0, 1] : max_{t<=n} K_t(m) >= 1/delta }     (u = 1 when no m qualifies)

is a UCB: on the event {max_{t<=n} K_t(mu) < 1/delta}, of probability >= 1 - delta, mu is not rejected,
and every rejected m is > mu by the monotonicity below. It is never above the final-capital bound
inf{m : K_n(m) >= 1/delta} (the maximum includes t = n), which `running_max=False` still computes. The
maximum is over the prefixes of ONE capital process, with ONE sequence of bets fixed before the draws (the
bets below are tuned for the final n, which is fixed in advance); taking the best of several processes
(e.g. bets re-tuned for each prefix length) would be a union bound that is not paid for.

Anytime validity (`--target-slack`). Ville's inequality bounds the capital's whole path, so on the same event of
probability >= 1 - delta, mu is not rejected at ANY t <= n: the UCB computed from the first t draws,
inf{m : max_{i<=t} K_i(m) >= 1/delta}, holds for every t at once, and so at a stopping time chosen by looking at the
draws. This needs the bets fixed in advance, i.e. tuned for a horizon N fixed before any draw (the `horizon`
argument: the most draws the run may take), not re-tuned for the t at which the run stops. Of the UCBs here only
betting has this property: hoeffding and maurer-pontil are fixed-n intervals, valid at one n chosen in advance;
re-checked after every round and stopped on, they under-cover (the coverage simulation shows it for maurer-pontil,
whose width shrinks exactly when the draws happen to be low).

The bets are the paper's predictable plug-in (PrPl) ones tuned for a fixed sample size n (or the horizon N),

    mu_hat_t     = (1/2 + sum_{i<=t} x_i) / (t + 1)
    sigma2_hat_t = (1/4 + sum_{i<=t} (x_i - mu_hat_i)^2) / (t + 1)          (sigma2_hat_0 = 1/4)
    lambda_t     = sqrt(2 ln(1/delta) / (n * sigma2_hat_{t-1}))
    lambda_t(m)  = min(lambda_t, c / (1 - m)),   c = BETTING_TRUNCATION = 0.9

(the paper's two-sided interval hedges two such processes with weight 1/2 each and uses ln(2/alpha); a
one-sided bound keeps only the process that bets against large means, so delta takes the place of
alpha/2). The truncation keeps every factor >= 1 - c > 0; any constant c in (0, 1) fixed in advance is valid.
Why c = 0.9 and not the paper's 3/4: for low-variance draws (block means: sd ~ 0.2 bits on a range of
8-20 bits, i.e. sd ~ 0.01-0.03 of the range) the untruncated bet sqrt(2 ln(1/delta) / (n sigma^2)) is far
above c/(1 - m), so the truncation binds on most steps and the width scales roughly like 1/c. A large c costs
where a draw lands far above m while the bet is truncated: each such draw multiplies the capital by about
1 - c, i.e. ln(1 - c) = -2.3 nats at 0.9, -3.0 at 0.95, against -1.4 at 0.75. The synthetic study
(scripts/bench_tightness.py --sections betting; delta = 0.01, 50 repetitions; width ratios against c = 0.75):

    block means, sd 0.2-0.5 bits on 8-20 bits, s = 500-4000:   c = 0.9: 0.84-0.96    c = 0.95: 0.80-0.96
    token-like Gamma and Beta(2, 8) draws, n = 60-2000:         c = 0.9: 0.87-1.00    c = 0.95: 0.84-1.00
    Bernoulli(0.5):                                              1.00                 1.00
    Bernoulli(0.1) and Bernoulli(0.02), n = 60-2000:            c = 0.9: 0.93-1.17    c = 0.95: 0.94-1.28
    (c = 0.5: 1.3-1.5 times wider on block means; at most 6% narrower on sparse Bernoulli draws, n >= 500)

c = 0.9 keeps most of 0.95's gain on block means and token losses and has about half its worst loss on
sparse draws (+17% against +28%, Bernoulli(0.02) at n = 500). The constant was chosen from this synthetic
study alone, before and without any bound on a real corpus.

Each factor is non-decreasing in m (for lambda_t(m) = lambda_t it is 1 - lambda_t (x_t - m); where the
truncation is active it is 1 - c + c (1 - x_t) / (1 - m)), and positive, so every K_t(m) is non-decreasing
in m, hence so is max_{t<=n} K_t(m), and u is its unique crossing of 1/delta, found with
scipy.optimize.brentq on ln max_t K_t(m) (one row at a time, for 1-D input and long rows) or a vectorised
bisection (many short rows at once). The bets depend on the order of the draws: pass them in the order they
were sampled (any fixed order of i.i.d. draws is valid, but it must not be chosen after looking at the values).
"""

import functools
from collections.abc import Callable

import numpy as np
from scipy.optimize import brentq

BETTING_TRUNCATION = 0.9  # c; any constant in (0, 1) fixed in advance is valid (the module docstring says why 0.9)
_RANGE_TOLERANCE = 1e-9  # relative: block means and sums of floats may stray this far outside [lo, hi]
_ROOT_XTOL = 1e-12


def _check(values, lo: float, hi: float, delta: float, min_n: int = 1) -> np.ndarray:
    """Validate the inputs and return the draws scaled to [0, 1], shape (..., n)."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"need finite lo < hi, got [{lo}, {hi}]")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] < min_n:
        raise ValueError(f"need at least {min_n} draw(s) per row, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("values must be finite")
    raw_min, raw_max = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo)
    if x.min() < -_RANGE_TOLERANCE or x.max() > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(f"values must lie in [{lo}, {hi}]; got values in [{raw_min}, {raw_max}]")
    return np.clip(x, 0.0, 1.0)


def _finish(u01: np.ndarray, lo: float, hi: float):
    """Map a [0, 1]-scale bound back to [lo, hi], capping at hi (the only safe direction)."""
    u = lo + (hi - lo) * np.minimum(u01, 1.0)
    return float(u) if np.ndim(u) == 0 else u


def hoeffding_ucb(values: np.ndarray, lo: float, hi: float, delta: float):
    """Hoeffding: mean + (hi - lo) * sqrt(ln(1/delta) / (2n))."""
    x = _check(values, lo, hi, delta)
    n = x.shape[-1]
    return _finish(x.mean(axis=-1) + np.sqrt(np.log(1.0 / delta) / (2.0 * n)), lo, hi)


def maurer_pontil_ucb(values: np.ndarray, lo: float, hi: float, delta: float):
    """Maurer-Pontil empirical Bernstein (Theorem 4): needs n >= 2."""
    x = _check(values, lo, hi, delta, min_n=2)
    n = x.shape[-1]
    log_term = np.log(2.0 / delta)
    sample_var = x.var(axis=-1, ddof=1)
    width = np.sqrt(2.0 * sample_var * log_term / n) + 7.0 * log_term / (3.0 * (n - 1))
    return _finish(x.mean(axis=-1) + width, lo, hi)


def betting_bets(x01: np.ndarray, delta: float, horizon: int | None = None) -> np.ndarray:
    """Predictable plug-in bets lambda_t (before truncation at c/(1-m)) for draws in [0, 1], shape (.., n).

    Tuned for n draws, or for `horizon` >= n when the number of draws is a stopping time (anytime validity).
    """
    draws = x01.shape[-1]
    n = draws if horizon is None else int(horizon)
    if n < draws:
        raise ValueError(f"the betting horizon {n} is shorter than the {draws} draws")
    t = np.arange(1, draws + 1, dtype=np.float64)
    mu_hat = (0.5 + np.cumsum(x01, axis=-1)) / (t + 1.0)
    sigma2_hat = (0.25 + np.cumsum((x01 - mu_hat) ** 2, axis=-1)) / (t + 1.0)
    # lambda_t uses sigma2_hat_{t-1}: shift right by one, with the prior value 1/4 at t = 1
    sigma2_prev = np.concatenate([np.full(x01.shape[:-1] + (1,), 0.25), sigma2_hat[..., :-1]], axis=-1)
    return np.sqrt(2.0 * np.log(1.0 / delta) / (n * sigma2_prev))


def betting_log_capital(
    x01: np.ndarray, bets: np.ndarray, m, *, truncation: float = BETTING_TRUNCATION, running_max: bool = True
) -> np.ndarray:
    """ln max_{t<=n} K_t(m) (or ln K_n(m) with running_max=False) for candidate mean(s) m.

    m is a scalar or has the batch shape of x01 (...); the result has that batch shape. The maximum is over
    the prefixes of the one process whose bets are `bets` (tuned for the full n).
    """
    m = np.asarray(m, dtype=np.float64)[..., None]
    with np.errstate(divide="ignore"):
        cap = np.where(m < 1.0, truncation / (1.0 - np.minimum(m, 1.0 - 1e-300)), np.inf)
    lam = np.minimum(bets, cap)
    steps = np.log1p(-lam * (x01 - m))
    if not running_max:
        return np.sum(steps, axis=-1)
    return np.max(np.cumsum(steps, axis=-1), axis=-1)


def _betting_root(x01: np.ndarray, bets: np.ndarray, threshold: float, **capital_kw) -> float:
    """inf{m : ln max_t K_t(m) >= threshold} for one row, by brentq, rounded up by brentq's tolerance."""
    if betting_log_capital(x01, bets, 1.0, **capital_kw) < threshold:
        return 1.0  # not even m = 1 is rejected
    root = brentq(lambda m: betting_log_capital(x01, bets, m, **capital_kw) - threshold, 0.0, 1.0, xtol=_ROOT_XTOL)
    # brentq's answer is within xtol (+ 4 eps relative) of the crossing; move up by that much to stay safe
    return min(1.0, root + _ROOT_XTOL + 8.0 * np.finfo(float).eps * root)


def betting_ucb(
    values: np.ndarray,
    lo: float,
    hi: float,
    delta: float,
    *,
    truncation: float = BETTING_TRUNCATION,
    running_max: bool = True,
    horizon: int | None = None,
):
    """Waudby-Smith & Ramdas betting UCB (one-sided, bets tuned for the fixed n, running intersection).

    Draws in sampling order. `horizon`: bets tuned for that many draws, fixed in advance, so that the UCB holds at
    a data-dependent stopping time <= horizon (the module docstring). `truncation` (c) and `running_max` (False:
    the final capital only, as before the running intersection) are for studies; the defaults are the registered
    bound.
    """
    if not 0.0 < truncation < 1.0:
        raise ValueError(f"the betting truncation must lie in (0, 1), got {truncation}")
    x = _check(values, lo, hi, delta)
    bets = betting_bets(x, delta, horizon)
    threshold = np.log(1.0 / delta)
    kw = {"truncation": float(truncation), "running_max": bool(running_max)}
    if x.ndim == 1:
        return _finish(np.float64(_betting_root(x, bets, threshold, **kw)), lo, hi)
    if x.shape[-1] >= 1000:  # long rows: a brentq per row needs ~10-15 capital evaluations instead of 45
        flat_x, flat_bets = x.reshape(-1, x.shape[-1]), bets.reshape(-1, x.shape[-1])
        roots = [_betting_root(row, row_bets, threshold, **kw) for row, row_bets in zip(flat_x, flat_bets, strict=True)]
        return _finish(np.reshape(roots, x.shape[:-1]), lo, hi)
    # many short rows: vectorised bisection on [0, 1], keeping `upper` rejected (K >= 1/delta) or at 1
    lower = np.zeros(x.shape[:-1])
    upper = np.ones(x.shape[:-1])
    for _ in range(45):  # 2^-45 ~ 3e-14 of the range
        mid = 0.5 * (lower + upper)
        rejected = betting_log_capital(x, bets, mid, **kw) >= threshold
        upper = np.where(rejected, mid, upper)
        lower = np.where(rejected, lower, mid)
    return _finish(upper, lo, hi)


UcbFunction = Callable[[np.ndarray, float, float, float], "float | np.ndarray"]

UCBS: dict[str, UcbFunction] = {
    "hoeffding": hoeffding_ucb,
    "maurer-pontil": maurer_pontil_ucb,
    "betting": betting_ucb,
}


ANYTIME_UCBS = ("betting",)  # valid at a stopping time when given a horizon fixed in advance


def get_ucb(name: str, horizon: int | None = None) -> UcbFunction:
    """The UCB registered under `name` (hoeffding, maurer-pontil, betting); with a horizon, the anytime-valid
    form (betting only), for draws whose number is a stopping time <= horizon."""
    try:
        ucb = UCBS[name]
    except KeyError:
        raise ValueError(f"unknown subsampling UCB {name!r}; choose one of {', '.join(UCBS)}") from None
    if horizon is None:
        return ucb
    if name not in ANYTIME_UCBS:
        raise ValueError(f"the {name} UCB is a fixed-n interval: it has no anytime-valid form")
    return functools.partial(ucb, horizon=int(horizon))
