"""Subsampling UCBs: hand values, independent recomputations, exact binomial coverage, simulated coverage."""

import math

import numpy as np
import pytest
from scipy import stats

from tokenbounds.stats.subsample import (
    BETTING_TRUNCATION,
    UCBS,
    betting_ucb,
    get_ucb,
    hoeffding_ucb,
    maurer_pontil_ucb,
)

N_TRIALS = 2000


def allowance(delta: float, trials: int = N_TRIALS) -> float:
    """Violation rate a valid bound may show by chance: delta + 3 binomial standard deviations."""
    return delta + 3.0 * math.sqrt(delta * (1.0 - delta) / trials)


# ---------------------------------------------------------------- Hoeffding


def test_hoeffding_hand_value():
    x = np.tile([0.0, 1.0], 50)  # n = 100, mean 1/2
    # 0.5 + sqrt(ln(10) / 200), ln 10 = 2.302585093
    assert hoeffding_ucb(x, 0.0, 1.0, 0.1) == pytest.approx(0.5 + 0.1072983013, abs=1e-9)
    # affine: values in [2, 12] are 2 + 10 x; the bound moves with them
    assert hoeffding_ucb(2.0 + 10.0 * x, 2.0, 12.0, 0.1) == pytest.approx(2.0 + 10.0 * (0.5 + 0.1072983013))


def test_hoeffding_exact_binomial_coverage():
    """For Bernoulli(p) draws the violation probability is a binomial tail: compute it exactly."""
    n, delta = 60, 0.1
    for p in np.linspace(0.02, 0.98, 49):
        s = np.arange(n + 1)
        ucb = np.array([hoeffding_ucb(np.r_[np.ones(k), np.zeros(n - k)], 0, 1, delta) for k in s])
        violation = stats.binom.pmf(s, n, p)[ucb < p].sum()
        assert violation <= delta


def test_hoeffding_clips_at_hi_only():
    x = np.array([0.9, 1.0])
    assert hoeffding_ucb(x, 0.0, 1.0, 0.05) == 1.0  # 0.95 + 1.22 would exceed the range
    assert hoeffding_ucb(np.zeros(10**6), 0.0, 1.0, 0.05) > 0.0  # never clipped down to the sample mean


# ---------------------------------------------------------------- Maurer-Pontil


def test_maurer_pontil_matches_pairwise_variance_formula():
    """Theorem 4 writes V_n = 1/(n(n-1)) sum_{i<j} (X_i - X_j)^2; recompute it that way."""
    rng = np.random.default_rng(5)
    x = rng.beta(2, 5, size=300)
    n, delta = x.size, 0.05
    diffs = np.subtract.outer(x, x)
    v_pairwise = np.sum(np.triu(diffs, 1) ** 2) / (n * (n - 1))
    log_term = math.log(2 / delta)
    expected = x.mean() + math.sqrt(2 * v_pairwise * log_term / n) + 7 * log_term / (3 * (n - 1))
    assert maurer_pontil_ucb(x, 0.0, 1.0, delta) == pytest.approx(expected, rel=1e-12)


def test_maurer_pontil_hand_value():
    x = np.array([0.0, 1.0, 0.0, 1.0])  # mean 1/2, sample variance 1/3
    # 0.5 + sqrt(2 * (1/3) * ln(20) / 4) + 7 ln(20) / 9, ln 20 = 2.995732274
    assert maurer_pontil_ucb(x, 0, 1, 0.1) == 1.0  # clipped: 0.5 + 0.7066 + 2.33
    y = np.tile([0.0, 1.0], 500)  # n = 1000, sample variance 1000/3996
    expected = 0.5 + math.sqrt(2 * (1000 / 3996) * 2.995732274 / 1000) + 7 * 2.995732274 / (3 * 999)
    assert maurer_pontil_ucb(y, 0, 1, 0.1) == pytest.approx(expected, rel=1e-9)


def test_maurer_pontil_exact_binomial_coverage():
    """Bernoulli draws: the bound depends on the count only, so the violation probability is a finite sum."""
    n, delta = 80, 0.2
    s = np.arange(n + 1)
    ucb = np.array([maurer_pontil_ucb(np.r_[np.ones(k), np.zeros(n - k)], 0, 1, delta) for k in s])
    for p in np.linspace(0.01, 0.99, 99):
        assert stats.binom.pmf(s, n, p)[ucb < p].sum() <= delta


def test_maurer_pontil_needs_two_draws():
    with pytest.raises(ValueError):
        maurer_pontil_ucb(np.array([0.5]), 0, 1, 0.05)


# ---------------------------------------------------------------- betting


def _betting_capital_by_loop(x: np.ndarray, m: float, delta: float, c: float = BETTING_TRUNCATION):
    """(K_n(m), max_{t<=n} K_t(m)) recomputed step by step from the paper's definitions (no shared code).

    One bet sequence, tuned for the full n, for every prefix: the running maximum is over one process.
    """
    n = len(x)
    mu_hat, sigma2_hat = 0.5, 0.25  # the paper's priors: mu_hat_0 = 1/2, sigma2_hat_0 = 1/4
    running_sum, running_sq = 0.0, 0.0
    capital, best = 1.0, 0.0
    for t in range(1, n + 1):
        lam = math.sqrt(2 * math.log(1 / delta) / (n * sigma2_hat))  # uses sigma2_hat_{t-1}
        lam = min(lam, c / (1 - m)) if m < 1 else lam
        capital *= 1 - lam * (x[t - 1] - m)
        best = max(best, capital)
        running_sum += x[t - 1]
        mu_hat = (0.5 + running_sum) / (t + 1)
        running_sq += (x[t - 1] - mu_hat) ** 2
        sigma2_hat = (0.25 + running_sq) / (t + 1)
    return capital, best


def test_truncation_constant_and_its_check():
    assert BETTING_TRUNCATION == 0.9  # chosen in advance from the synthetic study (module docstring)
    x = np.linspace(0.1, 0.3, 50)
    for bad in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="truncation"):
            betting_ucb(x, 0, 1, 0.05, truncation=bad)


@pytest.mark.parametrize("running_max", [True, False])
@pytest.mark.parametrize("c", [BETTING_TRUNCATION, 0.5])
def test_betting_matches_loop_and_grid_scan(running_max, c):
    rng = np.random.default_rng(7)
    x = rng.beta(2, 9, size=150)
    delta = 0.05
    u = betting_ucb(x, 0.0, 1.0, delta, truncation=c, running_max=running_max)
    pick = 1 if running_max else 0

    def capital(m):
        return _betting_capital_by_loop(x, m, delta, c)[pick]

    # the capital crosses 1/delta at u: just below u it does not reject, at u it does
    assert capital(u - 1e-9) < 1 / delta
    assert capital(u) >= 1 / delta * (1 - 1e-9)
    # a grid scan (how the authors' reference code inverts the test) brackets the same point
    grid = np.linspace(0, 1, 2001)
    rejected = np.array([capital(m) >= 1 / delta for m in grid])
    first_rejected = grid[np.argmax(rejected)]
    assert first_rejected - 1 / 2000 <= u <= first_rejected
    assert x.mean() < u


def test_running_max_is_a_max_over_prefixes_of_one_process():
    """On data whose capital peaks early and then falls, the running maximum keeps the early rejection."""
    x = np.r_[np.full(60, 0.05), np.full(140, 0.6)]  # low first: the capital against m ~ 0.3 grows, then falls
    delta = 0.05
    u_final = betting_ucb(x, 0, 1, delta, running_max=False)
    u_run = betting_ucb(x, 0, 1, delta)
    assert u_run < u_final
    final, best = _betting_capital_by_loop(x, u_run, delta)
    assert best >= (1 - 1e-9) / delta and final < 1 / delta  # rejected by the maximum only


@pytest.mark.parametrize("running_max", [True, False])
def test_betting_batched_bisection_matches_brentq(running_max):
    rng = np.random.default_rng(8)
    kw = {"running_max": running_max}
    x = rng.beta(1, 6, size=(40, 250))
    batched = betting_ucb(x, 0.0, 1.0, 0.1, **kw)
    single = np.array([betting_ucb(row, 0.0, 1.0, 0.1, **kw) for row in x])
    np.testing.assert_allclose(batched, single, atol=3e-12)
    long_rows = rng.beta(1, 6, size=(2, 3, 1500))  # the per-row brentq path keeps the batch shape
    expected = np.array([[betting_ucb(row, 0.0, 1.0, 0.1, **kw) for row in block] for block in long_rows])
    np.testing.assert_array_equal(betting_ucb(long_rows, 0.0, 1.0, 0.1, **kw), expected)
    # the two paths agree on the same rows (bisection for 999 draws, brentq for 1000 and for 1-D input)
    rows = rng.beta(2, 5, size=(3, 1000))
    bisect = betting_ucb(np.concatenate([rows[:, :999], rows[:, :999]]), 0, 1, 0.1, **kw)[:3]
    brent = np.array([betting_ucb(row[:999], 0, 1, 0.1, **kw) for row in rows])
    np.testing.assert_allclose(bisect, brent, atol=3e-12)


def test_running_intersection_never_above_final_capital():
    """max_t K_t >= K_n for every m, so the running-intersection UCB is <= the final-capital UCB: any input."""
    rng = np.random.default_rng(21)
    cases = [
        rng.beta(2, 9, size=(30, 120)),
        (rng.random((30, 80)) < 0.3).astype(float),
        np.clip(0.2 + 0.01 * rng.standard_normal((30, 500)), 0, 1),
        rng.random((30, 40)),
        np.sort(rng.beta(2, 2, size=(30, 100)), axis=1),  # adversarial orders
        np.sort(rng.beta(2, 2, size=(30, 100)), axis=1)[:, ::-1],
    ]
    for x in cases:
        for delta in (0.001, 0.05, 0.3):
            for c in (0.5, BETTING_TRUNCATION):
                new = betting_ucb(x, 0, 1, delta, truncation=c)
                old = betting_ucb(x, 0, 1, delta, truncation=c, running_max=False)
                assert np.all(new <= old + 1e-12)
    x = rng.beta(2, 9, size=(2, 1200))  # and on the brentq path
    assert np.all(betting_ucb(x, 0, 1, 0.05) <= betting_ucb(x, 0, 1, 0.05, running_max=False) + 1e-12)


def _min_over_retuned_prefixes(x: np.ndarray, delta: float) -> np.ndarray:
    """BROKEN on purpose: the best of the UCBs of several prefixes, each with bets re-tuned for its length.

    That is a maximum over different capital processes (one per n), a union bound that is not paid for.
    """
    n = x.shape[-1]
    prefixes = np.unique(np.geomspace(5, n, 12).astype(int))
    return np.min([betting_ucb(x[..., :t], 0, 1, delta) for t in prefixes], axis=0)


def test_running_intersection_coverage_and_retuned_prefixes_are_caught():
    """Monte Carlo at the binomial allowance: the running intersection covers; re-tuning bets per n does not."""
    rng = np.random.default_rng(2024)
    delta, n, p = 0.05, 400, 0.3
    x = (rng.random((N_TRIALS, n)) < p).astype(float)
    u = betting_ucb(x, 0, 1, delta)
    assert np.mean(u < p) <= allowance(delta)  # measured 0.032
    assert np.mean(betting_ucb(x, 0, 1, delta, running_max=False) < p) <= np.mean(u < p)  # measured 0.008
    assert np.mean(_min_over_retuned_prefixes(x, delta) < p) > allowance(delta)  # measured 0.080 vs 0.065


def test_betting_depends_on_order_but_not_on_scale():
    rng = np.random.default_rng(9)
    x = rng.beta(2, 3, size=200)
    assert betting_ucb(x, 0, 1, 0.05) != betting_ucb(np.sort(x), 0, 1, 0.05)  # bets are predictable
    scaled = betting_ucb(3.0 + 4.0 * x, 3.0, 7.0, 0.05)
    assert scaled == pytest.approx(3.0 + 4.0 * betting_ucb(x, 0, 1, 0.05), rel=1e-10)


def test_betting_much_tighter_than_hoeffding_on_low_variance_data():
    rng = np.random.default_rng(10)
    x = rng.beta(2, 50, size=1000)  # mean 0.038, sd 0.026 on a [0, 1] range
    mean = x.mean()
    w_bet = betting_ucb(x, 0, 1, 0.05) - mean
    w_hoef = hoeffding_ucb(x, 0, 1, 0.05) - mean
    w_mp = maurer_pontil_ucb(x, 0, 1, 0.05) - mean
    assert w_bet < 0.2 * w_hoef  # measured: 0.0042 vs 0.0387
    assert w_bet < w_mp  # measured: 0.0042 vs 0.0109


def test_betting_never_much_looser_than_hoeffding_at_maximal_variance():
    rng = np.random.default_rng(11)
    x = (rng.random((300, 400)) < 0.5).astype(float)
    mean = x.mean(axis=1)
    ratio = (betting_ucb(x, 0, 1, 0.05) - mean) / (hoeffding_ucb(x, 0, 1, 0.05) - mean)
    assert ratio.mean() < 1.0  # Bernoulli(1/2) is Hoeffding's worst case; betting still matches it
    assert ratio.max() < 1.1


# ---------------------------------------------------------------- all UCBs


@pytest.mark.parametrize("name", list(UCBS))
def test_monotone_in_delta_and_n(name):
    ucb = get_ucb(name)
    rng = np.random.default_rng(12)
    x = rng.beta(2, 8, size=400)
    values = [ucb(x, 0, 1, d) for d in (0.001, 0.01, 0.05, 0.2, 0.5)]
    assert all(b <= a for a, b in zip(values, values[1:], strict=False))
    # more draws from the same source: a narrower bound (averaged over repetitions, since the draws differ)
    small = ucb(rng.beta(2, 8, size=(50, 100)), 0, 1, 0.05) - 0.2
    large = ucb(rng.beta(2, 8, size=(50, 1600)), 0, 1, 0.05) - 0.2
    assert large.mean() < 0.5 * small.mean()


@pytest.mark.parametrize("name", list(UCBS))
def test_rejects_bad_input(name):
    ucb = get_ucb(name)
    x = np.array([0.1, 0.5, 0.9])
    for delta in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(ValueError):
            ucb(x, 0, 1, delta)
    with pytest.raises(ValueError):
        ucb(x, 0.0, 0.5, 0.05)  # 0.9 outside [0, 0.5]
    with pytest.raises(ValueError):
        ucb(x, 1.0, 0.0, 0.05)
    with pytest.raises(ValueError):
        ucb(np.array([0.1, np.nan, 0.2]), 0, 1, 0.05)
    assert ucb(np.array([0.0, 1.0 + 1e-12]), 0, 1, 0.05) <= 1.0  # float noise at the edge is tolerated


def test_registry():
    assert set(UCBS) == {"hoeffding", "maurer-pontil", "betting"}
    with pytest.raises(ValueError, match="choose one of"):
        get_ucb("bernstein")


# ---------------------------------------------------------------- coverage by simulation

# (distribution, n, delta) where half the width of each bound is caught: a harness that cannot see a
# broken bound would prove nothing about the correct one.
COVERAGE_CASES = {
    "hoeffding": ("bernoulli", 0.5, 1000, 0.05),
    "maurer-pontil": ("bernoulli", 0.5, 5000, 0.01),
    "betting": ("beta", 0.2, 1000, 0.05),
}


def _draws(kind: str, mean: float, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "bernoulli":
        return (rng.random((N_TRIALS, n)) < mean).astype(np.float64)
    return rng.beta(2.0, 2.0 * (1 - mean) / mean, size=(N_TRIALS, n))  # Beta(2, 8): mean 0.2, sd 0.12


@pytest.mark.parametrize("name", list(UCBS))
def test_coverage_and_half_width_is_caught(name):
    kind, mean, n, delta = COVERAGE_CASES[name]
    rng = np.random.default_rng(2024)
    x = _draws(kind, mean, n, rng)
    sample_mean = x.mean(axis=1)
    u = get_ucb(name)(x, 0.0, 1.0, delta)
    assert np.mean(u < mean) <= allowance(delta)
    half = sample_mean + 0.5 * (u - sample_mean)
    assert np.mean(half < mean) > allowance(delta)


@pytest.mark.parametrize("name", list(UCBS))
@pytest.mark.parametrize("kind,mean", [("bernoulli", 0.1), ("beta", 0.05), ("bernoulli", 0.9)])
def test_coverage_small_samples(name, kind, mean):
    rng = np.random.default_rng(99)
    x = _draws(kind, mean, 60, rng)
    assert np.mean(get_ucb(name)(x, 0.0, 1.0, 0.1) < mean) <= allowance(0.1)
