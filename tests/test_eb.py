"""The EB token bound: formulas recomputed independently, bookkeeping, grid checks, the centring c >= a."""

import math

import mpmath
import numpy as np
import pytest
from scipy import optimize, stats

from tokenbounds.stats.centring import smoothed_entropy_bits
from tokenbounds.stats.eb import (
    EBBound,
    eb_bound,
    eb_bound_exhaustive,
    eb_bounds_batch,
    eb_topk_bound,
    eb_topk_bound_exhaustive,
    psi,
)
from tokenbounds.stats.lambda_grid import GRID_LOGIT_STEP, check_lambda_grid, default_lambda_grid
from tokenbounds.stats.smoothing import loss_range
from tokenbounds.stats.subsample import betting_ucb, get_ucb


def test_psi_against_mpmath():
    for lam in (1e-4, 0.01, 0.3, 0.5, 0.9, 0.999):
        exact = -mpmath.log(1 - mpmath.mpf(lam)) - mpmath.mpf(lam)
        assert float(psi(lam)) == pytest.approx(float(exact), rel=1e-10)
    assert float(psi(0.5)) == pytest.approx(0.1931471806, rel=1e-9)  # ln 2 - 1/2


def test_default_grid_is_fixed_logit_uniform_in_open_unit_interval():
    grid = default_lambda_grid()
    assert grid.size == 42
    assert grid[0] == 1e-4 and grid[-1] == 0.9
    steps = np.diff(np.log(grid / (1 - grid)))
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)
    assert steps[0] <= GRID_LOGIT_STEP == pytest.approx(2 * math.acosh(1.01))
    assert default_lambda_grid(41).size == 41 and np.diff(np.log(default_lambda_grid(41))).max() > GRID_LOGIT_STEP
    np.testing.assert_array_equal(grid, default_lambda_grid())
    np.testing.assert_array_equal(check_lambda_grid(grid), grid)
    assert default_lambda_grid(1).tolist() == [0.9]


def _grid_rounding_cost(grid, big_a, big_b):
    """min over the grid of f / min over [grid[0], grid[-1]] of f - 1, f = A/lambda + B psi(lambda)/lambda."""

    def f(lam):
        return big_a / lam + big_b * (-np.log1p(-lam) - lam) / lam

    res = optimize.minimize_scalar(
        lambda u: f(math.exp(u)),
        bounds=(math.log(grid[0]), math.log(grid[-1])),
        method="bounded",
        options={"xatol": 1e-10},
    )
    continuous = min(res.fun, f(grid[0]), f(grid[-1]))
    return float(np.min(f(np.asarray(grid)))) / continuous - 1.0


def _rounding_cases():
    """(A, B) whose continuous minimiser lambda* runs over the grid's range: A = B (lambda* psi'(lambda*) - psi)."""
    cases = []
    for lam_star in np.geomspace(1.05e-4, 0.89, 150):
        for big_b in (1e-4, 0.01, 1.0):
            psi_star = -math.log1p(-lam_star) - lam_star
            cases.append((big_b * (lam_star**2 / (1 - lam_star) - psi_star), big_b))
    return cases


def test_default_grid_rounding_costs_under_one_percent():
    """The derivation (eb module docstring) checked numerically against a continuous minimisation over lambda."""
    grid = default_lambda_grid()
    costs = [_grid_rounding_cost(grid, a_, b_) for a_, b_ in _rounding_cases()]
    assert max(costs) < 0.01  # measured 0.0096
    assert max(costs) > 0.008  # the step is not wasted: near the bound, as derived (cosh(0.1391) - 1 = 0.0097)
    # the test can see a coarse grid: the old 20-point geometric grid costs up to 11%, a geometric grid with the
    # small-lambda ratio 1.32 still 3.7% near lambda* ~ 0.8 (the reason for the logit spacing)
    assert max(_grid_rounding_cost(np.geomspace(1e-4, 0.9, 20), a_, b_) for a_, b_ in _rounding_cases()) > 0.1
    geometric = np.geomspace(1e-4, 0.9, 34)
    assert max(_grid_rounding_cost(geometric, a_, b_) for a_, b_ in _rounding_cases()) > 0.03


@pytest.mark.parametrize(
    "bad", [[], [0.0, 0.5], [0.5, 1.0], [-0.1], [1.5], [0.2, float("nan")], [0.3, 0.3], [[0.1, 0.2]]]
)
def test_bad_lambda_grid_is_refused(bad):
    with pytest.raises(ValueError):
        check_lambda_grid(bad)
    with pytest.raises(ValueError):
        eb_bound_exhaustive(5.0, 0.01, a=0.1, delta_range=20.0, complexity_nats=10.0, m=1000, lambdas=bad, delta1=0.05)


ALPHA, VOCAB = 0.01, 50257
A, DELTA_RANGE = loss_range(ALPHA, VOCAB)


def _reference_exhaustive(mean_loss, v, complexity, m, lambdas, delta1):
    """docs/statistics.md, "The `eb` bound", literally: min over the grid of R_hat + Delta [L/(lambda m) +
    psi(lambda)/lambda v], and the paper's R_hat + Delta sqrt(L/(2m)), all with L over the |Lambda| + 1 candidates."""
    big_l = complexity + math.log((len(lambdas) + 1) / delta1)
    best = mean_loss + DELTA_RANGE * math.sqrt(big_l / (2 * m))
    for lam in lambdas:
        psi_lam = -math.log(1 - lam) - lam
        best = min(best, mean_loss + DELTA_RANGE * (big_l / (lam * m) + psi_lam / lam * v))
    return best


def test_exhaustive_matches_the_design_formula():
    lambdas = default_lambda_grid()
    for complexity, m, v in [(1e5, 10**9, 0.008), (50.0, 10**4, 0.02), (0.0, 500, 0.3), (1e7, 10**10, 1e-4)]:
        res = eb_bound_exhaustive(
            4.0,
            v,
            a=A,
            delta_range=DELTA_RANGE,
            complexity_nats=complexity,
            m=m,
            lambdas=lambdas,
            delta1=0.01,
        )
        assert res.bound == pytest.approx(_reference_exhaustive(4.0, v, complexity, m, lambdas, 0.01), rel=1e-12)
        assert res.bound == pytest.approx(
            res.empirical_loss + res.variance_term + res.complexity_term + res.subsample_slack, rel=1e-12
        )
        assert res.subsample_slack == 0.0 and res.delta2 == 0.0 and res.n_units is None
        assert res.log_term_nats == pytest.approx(complexity + math.log(43 / 0.01))
        assert res.n_points == 43


def test_leading_term_is_sigma_sqrt_2L_over_m():
    """For a fine grid and small lambda*, the excess is ~ Delta sqrt(2 L v / m) = sigma_c sqrt(2 L / m)."""
    fine = np.geomspace(1e-5, 0.5, 400)
    m, v, complexity = 10**11, 0.01, 2e5  # lambda* = sqrt(2L/(m v)) = 0.02: second-order terms ~1%
    res = eb_bound_exhaustive(
        4.0, v, a=A, delta_range=DELTA_RANGE, complexity_nats=complexity, m=m, lambdas=fine, delta1=0.05
    )
    big_l = complexity + math.log(401 / 0.05)
    leading = DELTA_RANGE * math.sqrt(2 * big_l * v / m)
    assert res.bound - 4.0 == pytest.approx(leading, rel=0.02)
    # against the paper's Azuma term with the same L: Delta sqrt(L / (2m)); ratio = 2 sqrt(v) = 0.2
    azuma = DELTA_RANGE * math.sqrt(big_l / (2 * m))
    assert (res.bound - 4.0) / azuma == pytest.approx(2 * math.sqrt(v), rel=0.02)


def _token_sample(n, seed=0):
    """Synthetic per-token losses and centring errors in their valid ranges."""
    rng = np.random.default_rng(seed)
    loss = np.clip(A + rng.gamma(3.0, 1.3, size=n), A, A + DELTA_RANGE)
    centring = A + 3.9  # a constant >= a is a valid centring
    sq = ((centring - loss) / DELTA_RANGE) ** 2
    return loss, sq


def test_sampled_hoeffding_matches_independent_recomputation():
    loss, sq = _token_sample(3000)
    lambdas = [0.01, 0.05, 0.2, 0.6]
    complexity, m, d1, d2 = 3000.0, 10**7, 0.02, 0.03
    res = eb_bound(
        loss,
        sq,
        a=A,
        delta_range=DELTA_RANGE,
        complexity_nats=complexity,
        m=m,
        lambdas=lambdas,
        delta1=d1,
        delta2=d2,
        ucb="hoeffding",
    )
    # the Azuma point: Hoeffding UCB of the mean loss at d2/5, plus Delta sqrt(L/(2m)); L over 4 + 1 candidates
    big_l = complexity + math.log(5 / d1)
    expected = loss.mean() + DELTA_RANGE * math.sqrt(math.log(5 / d2) / (2 * len(loss)))
    expected += DELTA_RANGE * math.sqrt(big_l / (2 * m))
    for lam in lambdas:
        ratio = (-math.log(1 - lam) - lam) / lam
        z = loss + DELTA_RANGE * ratio * sq
        width = DELTA_RANGE * (1 + ratio)  # range of Z
        ucb_z = z.mean() + width * math.sqrt(math.log(5 / d2) / (2 * len(z)))
        expected = min(expected, ucb_z + DELTA_RANGE * big_l / (lam * m))
    assert res.bound == pytest.approx(expected, rel=1e-12)
    assert res.delta2_per_lambda == pytest.approx(d2 / 5)


def test_sampled_betting_uses_one_ucb_of_z_per_lambda():
    loss, sq = _token_sample(2000, seed=1)
    lambdas = default_lambda_grid(8)
    kw = dict(a=A, delta_range=DELTA_RANGE, complexity_nats=500.0, m=10**6, lambdas=lambdas, delta1=0.01)
    res = eb_bound(loss, sq, delta2=0.02, ucb="betting", **kw)
    per_lambda = []
    for lam in lambdas:
        ratio = float(psi(lam)) / lam
        z = loss + DELTA_RANGE * ratio * sq
        ucb_z = betting_ucb(z, A, A + DELTA_RANGE * (1 + ratio), 0.02 / 9)
        per_lambda.append(ucb_z + DELTA_RANGE * (500.0 + math.log(9 / 0.01)) / (lam * 10**6))
    azuma = betting_ucb(loss, A, A + DELTA_RANGE, 0.02 / 9)
    azuma += DELTA_RANGE * math.sqrt((500.0 + math.log(9 / 0.01)) / (2 * 10**6))
    assert min(per_lambda) < azuma  # a lambda point wins here
    assert res.bound == pytest.approx(min(per_lambda), rel=1e-9)
    assert res.lam == lambdas[int(np.argmin(per_lambda))] and res.point == "lambda"
    assert res.bound == pytest.approx(
        res.empirical_loss + res.variance_term + res.subsample_slack + res.complexity_term, rel=1e-12
    )
    assert res.subsample_slack > 0
    # batch path agrees with the 1-D path
    bounds, best, _ = eb_bounds_batch(np.stack([loss, loss]), np.stack([sq, sq]), delta2=0.02, ucb="betting", **kw)
    np.testing.assert_allclose(bounds, res.bound, rtol=1e-9)
    # variance-adaptive subsampling beats Hoeffding's on these (low-spread) losses
    assert res.bound < eb_bound(loss, sq, delta2=0.02, ucb="hoeffding", **kw).bound


def test_bound_monotone_in_complexity_and_m():
    loss, sq = _token_sample(500, seed=2)
    kw = dict(a=A, delta_range=DELTA_RANGE, lambdas=default_lambda_grid(), delta1=0.02, delta2=0.02)
    by_complexity = [eb_bound(loss, sq, complexity_nats=c, m=10**6, **kw).bound for c in (0, 10, 1e3, 1e5)]
    assert all(b > a for a, b in zip(by_complexity, by_complexity[1:], strict=False))
    by_m = [eb_bound(loss, sq, complexity_nats=1e3, m=m, **kw).bound for m in (10**4, 10**6, 10**8)]
    assert all(b < a for a, b in zip(by_m, by_m[1:], strict=False))


def test_result_is_reportable():
    loss, sq = _token_sample(300)
    res = eb_bound(
        loss,
        sq,
        a=A,
        delta_range=DELTA_RANGE,
        complexity_nats=10.0,
        m=10**5,
        lambdas=default_lambda_grid(),
        delta1=0.01,
        delta2=0.01,
    )
    assert isinstance(res, EBBound)
    d = res.as_dict()
    assert d["ucb"] == "betting" and d["n_units"] == 300 and d["n_lambdas"] == 42 and d["m"] == 10**5
    assert d["n_points"] == 43 and d["point"] in ("lambda", "azuma")


def test_bad_inputs():
    loss, sq = _token_sample(100)
    kw = dict(a=A, delta_range=DELTA_RANGE, complexity_nats=10.0, m=1000, lambdas=[0.1, 0.5])
    with pytest.raises(ValueError):
        eb_bound(loss, sq, delta1=0.0, delta2=0.01, **kw)
    with pytest.raises(ValueError):
        eb_bound(loss, sq, delta1=0.01, delta2=1.0, **kw)
    with pytest.raises(ValueError):
        eb_bound(loss[:50], sq, delta1=0.01, delta2=0.01, **kw)
    with pytest.raises(ValueError):
        eb_bound(loss + DELTA_RANGE, sq, delta1=0.01, delta2=0.01, **kw)  # losses above a + Delta
    with pytest.raises(ValueError):
        eb_bound(loss, sq + 1.0, delta1=0.01, delta2=0.01, **kw)  # squared term above 1
    with pytest.raises(ValueError):
        eb_bound(loss, sq, delta1=0.01, delta2=0.01, ucb="chernoff", **kw)
    with pytest.raises(ValueError):
        eb_bound_exhaustive(4.0, 0.01, delta1=0.01, **{**kw, "m": 0})
    with pytest.raises(ValueError):
        eb_bound_exhaustive(4.0, 0.01, delta1=0.01, **{**kw, "complexity_nats": -1.0})


def test_topk_is_the_same_theorem_with_unit_range():
    rng = np.random.default_rng(3)
    err = (rng.random(400) < 0.3).astype(float)
    mass_outside = np.clip(rng.normal(0.3, 0.1, size=400), 0, 1)
    sq = (mass_outside - err) ** 2
    kw = dict(complexity_nats=20.0, m=10**5, lambdas=default_lambda_grid(), delta1=0.01)
    top = eb_topk_bound(err, sq, delta2=0.01, **kw)
    same = eb_bound(err, sq, a=0.0, delta_range=1.0, delta2=0.01, **kw)
    assert top.bound == same.bound and top.a == 0.0 and top.delta_range == 1.0
    exact = eb_topk_bound_exhaustive(err.mean(), sq.mean(), **kw)
    assert exact.bound < top.bound  # no subsampling slack
    with pytest.raises(ValueError):
        eb_topk_bound(err * 2, sq, delta2=0.01, **kw)


# ---------------------------------------------------------------- the centring


def test_smoothed_entropy_matches_scipy():
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.full(37, 0.3), size=5)
    for alpha in (1e-3, 0.1, 0.5):
        q = (1 - alpha) * p + alpha / 37
        np.testing.assert_allclose(smoothed_entropy_bits(p, alpha), stats.entropy(q, base=2, axis=-1), rtol=1e-12)


@pytest.mark.parametrize("vocab", [2, 50, 1000, 50257])
@pytest.mark.parametrize("alpha", [1e-4, 1e-2, 0.25, 0.9])
def test_smoothed_entropy_is_at_least_a(vocab, alpha):
    a, _ = loss_range(alpha, vocab)
    rng = np.random.default_rng(vocab)
    # peaked and spread predictions, and the extreme case: one-hot
    p = np.concatenate([rng.dirichlet(np.full(vocab, c), size=4) for c in (1e-3, 0.1, 1.0)])
    one_hot = np.zeros((1, vocab))
    one_hot[0, vocab // 2] = 1.0
    h = smoothed_entropy_bits(np.concatenate([p, one_hot]), alpha)
    assert np.all(h >= a - 1e-12)
    # one-hot: q puts 1 - alpha + alpha/V = 2^-a on one token and alpha/V on the V - 1 others, so
    # H(q) = a 2^-a + tail log2(V/alpha) with tail = alpha (V-1)/V = 1 - 2^-a,
    # i.e. H - a = tail (log2(V/alpha) - a)
    tail_mass = alpha * (vocab - 1) / vocab
    assert h[-1] - a == pytest.approx(tail_mass * (math.log2(vocab / alpha) - a), rel=1e-9, abs=1e-12)
    # on the scale of the range that is at most alpha: a correct one-hot prediction has xi ~ 0, not ~ +1
    _, delta_range = loss_range(alpha, vocab)
    assert (h[-1] - a) / delta_range <= alpha


def test_unsmoothed_entropy_would_violate_c_at_least_a():
    """Why the design insists on the smoothed entropy: a one-hot model has entropy 0 < a."""
    a, _ = loss_range(0.05, 100)
    one_hot = np.eye(100)[:1]
    assert stats.entropy(one_hot[0], base=2) == 0.0 < a
    assert smoothed_entropy_bits(one_hot, 0.05)[0] >= a


# ---------------------------------------------------------------- the Azuma point: never looser than lotfi


def _lotfi(unit_loss, *, complexity, m, delta1, delta2=None, ucb=None):
    """The paper's bound recomputed here: UCB (or exact mean) + Delta sqrt((C + ln 1/delta1) / (2m))."""
    martingale = DELTA_RANGE * math.sqrt((complexity + math.log(1 / delta1)) / (2 * m))
    if ucb is None:
        return float(np.mean(unit_loss)) + martingale
    return float(get_ucb(ucb)(unit_loss, A, A + DELTA_RANGE, delta2)) + martingale


L_OVER_M = np.geomspace(1e-3, 10.0, 13)


@pytest.mark.parametrize("ucb", [None, "hoeffding", "betting"])
def test_eb_never_looser_than_lotfi_by_more_than_the_extra_union_point(ucb):
    """eb <= lotfi(delta1, delta2) + the cost of the extra candidate, i.e. <= lotfi(delta1/N, delta2/N), N = K + 1;
    over L/m from 1e-3 to 10. Without the Azuma point eb is much looser at large L/m (the reason for it)."""
    loss, sq = _token_sample(400, seed=5)
    lambdas = default_lambda_grid()
    n_points = lambdas.size + 1
    m, d1, d2 = 10**5, 0.01, 0.02
    worse_without = []
    for ratio in L_OVER_M:
        complexity = ratio * m - math.log(n_points / d1)  # L = C + ln(N / delta1) = ratio * m
        complexity = max(complexity, 0.0)
        kw = dict(a=A, delta_range=DELTA_RANGE, complexity_nats=complexity, m=m, lambdas=lambdas, delta1=d1)
        if ucb is None:
            res = eb_bound_exhaustive(loss.mean(), sq.mean(), **kw)
            old = eb_bound_exhaustive(loss.mean(), sq.mean(), azuma=False, **kw)
        else:
            res = eb_bound(loss, sq, delta2=d2, ucb=ucb, **kw)
            old = eb_bound(loss, sq, delta2=d2, ucb=ucb, azuma=False, **kw)
        lotfi = _lotfi(loss, complexity=complexity, m=m, delta1=d1, delta2=d2, ucb=ucb)
        lotfi_union = _lotfi(loss, complexity=complexity, m=m, delta1=d1 / n_points, delta2=d2 / n_points, ucb=ucb)
        cost = lotfi_union - lotfi  # what the extra union point costs the paper's bound
        assert 0 < cost
        assert res.bound <= lotfi + cost + 1e-10 * lotfi, (ratio, res.bound, lotfi, cost)  # 1e-10: root finding
        if res.point == "azuma":  # the Azuma point is the paper's bound with the union's cost, exactly
            assert res.bound == pytest.approx(lotfi_union, rel=1e-10)
            assert res.lam is None and res.variance_term == 0.0
        assert res.bound == pytest.approx(
            res.empirical_loss + res.variance_term + res.complexity_term + res.subsample_slack, rel=1e-12
        )
        worse_without.append(old.bound > lotfi + cost)
    assert any(worse_without) and not all(worse_without)  # without it: fine at small L/m, looser at large L/m


def test_azuma_point_wins_at_large_l_over_m_and_pays_for_its_union():
    """Where the Azuma point wins, its bound is the paper's formula at delta1/N and delta2/N, N = |Lambda| + 1:
    an Azuma point at the undivided delta1, delta2 (no union cost) would be narrower and is caught here."""
    loss, sq = _token_sample(300, seed=6)
    lambdas = [0.05, 0.3, 0.9]
    kw = dict(a=A, delta_range=DELTA_RANGE, complexity_nats=5e4, m=10**4, lambdas=lambdas, delta1=0.01)
    res = eb_bound(loss, sq, delta2=0.02, ucb="betting", **kw)
    assert res.point == "azuma" and res.lam is None and res.n_points == 4
    expected = _lotfi(loss, complexity=5e4, m=10**4, delta1=0.01 / 4, delta2=0.02 / 4, ucb="betting")
    assert res.bound == pytest.approx(expected, rel=1e-12)
    assert res.log_term_nats == pytest.approx(5e4 + math.log(4 / 0.01))
    assert res.delta2_per_lambda == pytest.approx(0.02 / 4)
    assert res.bound > _lotfi(loss, complexity=5e4, m=10**4, delta1=0.01, delta2=0.02, ucb="betting")
    # the batch path reports the Azuma point as index len(lambdas), with the UCB of the mean loss
    bounds, best, best_ucb = eb_bounds_batch(np.stack([loss] * 2), np.stack([sq] * 2), delta2=0.02, **kw)
    np.testing.assert_array_equal(best, [3, 3])
    np.testing.assert_allclose(bounds, res.bound, rtol=1e-10)  # bisection (batch) against brentq (1-D)
    np.testing.assert_allclose(best_ucb, betting_ucb(loss, A, A + DELTA_RANGE, 0.02 / 4), rtol=1e-10)
    exact = eb_bound_exhaustive(loss.mean(), sq.mean(), **kw)
    assert exact.point == "azuma"
    assert exact.bound == pytest.approx(_lotfi(loss, complexity=5e4, m=10**4, delta1=0.01 / 4), rel=1e-12)
    # and with azuma=False the union is over the grid alone
    grid_only = eb_bound(loss, sq, delta2=0.02, ucb="betting", azuma=False, **kw)
    assert grid_only.point == "lambda" and grid_only.n_points == 3 and grid_only.bound > res.bound
    assert grid_only.log_term_nats == pytest.approx(5e4 + math.log(3 / 0.01))
