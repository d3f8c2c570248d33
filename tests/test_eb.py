"""The EB token bound: formulas recomputed independently, bookkeeping, grid checks, the centring c >= a."""

import math

import mpmath
import numpy as np
import pytest
from scipy import stats

from tokenbounds.stats.eb import (
    EBBound,
    check_lambda_grid,
    default_lambda_grid,
    eb_bound,
    eb_bound_exhaustive,
    eb_bounds_batch,
    eb_topk_bound,
    eb_topk_bound_exhaustive,
    psi,
    smoothed_entropy_bits,
)
from tokenbounds.stats.smoothing import loss_range
from tokenbounds.stats.subsample import betting_ucb


def test_psi_against_mpmath():
    for lam in (1e-4, 0.01, 0.3, 0.5, 0.9, 0.999):
        exact = -mpmath.log(1 - mpmath.mpf(lam)) - mpmath.mpf(lam)
        assert float(psi(lam)) == pytest.approx(float(exact), rel=1e-10)
    assert float(psi(0.5)) == pytest.approx(0.1931471806, rel=1e-9)  # ln 2 - 1/2


def test_default_grid_is_fixed_geometric_in_open_unit_interval():
    grid = default_lambda_grid()
    assert grid.size == 20
    assert grid[0] == pytest.approx(1e-4) and grid[-1] == pytest.approx(0.9)
    ratios = grid[1:] / grid[:-1]
    np.testing.assert_allclose(ratios, ratios[0])
    np.testing.assert_array_equal(grid, default_lambda_grid())
    np.testing.assert_array_equal(check_lambda_grid(grid), grid)
    assert default_lambda_grid(1).tolist() == [0.9]


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
    """DESIGN §3.2 literally: min over the grid of R_hat + Delta [L/(lambda m) + psi(lambda)/lambda v]."""
    best = math.inf
    for lam in lambdas:
        big_l = complexity + math.log(len(lambdas) * 1.0 / delta1)
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
        assert res.log_term_nats == pytest.approx(complexity + math.log(20 / 0.01))


def test_leading_term_is_sigma_sqrt_2L_over_m():
    """For a fine grid and small lambda*, the excess is ~ Delta sqrt(2 L v / m) = sigma_c sqrt(2 L / m)."""
    fine = np.geomspace(1e-5, 0.5, 400)
    m, v, complexity = 10**11, 0.01, 2e5  # lambda* = sqrt(2L/(m v)) = 0.02: second-order terms ~1%
    res = eb_bound_exhaustive(
        4.0, v, a=A, delta_range=DELTA_RANGE, complexity_nats=complexity, m=m, lambdas=fine, delta1=0.05
    )
    big_l = complexity + math.log(400 / 0.05)
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
    expected = math.inf
    for lam in lambdas:
        ratio = (-math.log(1 - lam) - lam) / lam
        z = loss + DELTA_RANGE * ratio * sq
        width = DELTA_RANGE * (1 + ratio)  # range of Z
        ucb_z = z.mean() + width * math.sqrt(math.log(len(lambdas) / d2) / (2 * len(z)))
        expected = min(expected, ucb_z + DELTA_RANGE * (complexity + math.log(4 / d1)) / (lam * m))
    assert res.bound == pytest.approx(expected, rel=1e-12)
    assert res.delta2_per_lambda == pytest.approx(d2 / 4)


def test_sampled_betting_uses_one_ucb_of_z_per_lambda():
    loss, sq = _token_sample(2000, seed=1)
    lambdas = default_lambda_grid(8)
    kw = dict(a=A, delta_range=DELTA_RANGE, complexity_nats=500.0, m=10**6, lambdas=lambdas, delta1=0.01)
    res = eb_bound(loss, sq, delta2=0.02, ucb="betting", **kw)
    per_lambda = []
    for lam in lambdas:
        ratio = float(psi(lam)) / lam
        z = loss + DELTA_RANGE * ratio * sq
        ucb_z = betting_ucb(z, A, A + DELTA_RANGE * (1 + ratio), 0.02 / 8)
        per_lambda.append(ucb_z + DELTA_RANGE * (500.0 + math.log(8 / 0.01)) / (lam * 10**6))
    assert res.bound == pytest.approx(min(per_lambda), rel=1e-9)
    assert res.lam == lambdas[int(np.argmin(per_lambda))]
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
    assert d["ucb"] == "betting" and d["n_units"] == 300 and d["n_lambdas"] == 20 and d["m"] == 10**5


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
