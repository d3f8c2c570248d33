"""The paper's bound and the delta split against independent computations and a simulation."""

import math

import numpy as np
import pytest
from scipy import stats

from tokenbounds.stats.lotfi import hoeffding_term, lotfi_bound, martingale_term, split_delta


def test_split_adds_up_and_divides_over_every_statistic():
    split = split_delta(0.05, 20, subsampled=True)
    assert split.martingale * 20 + split.subsampling * 20 == pytest.approx(0.05)
    assert split.martingale == pytest.approx(0.05 / 2 / 20)
    exhaustive = split_delta(0.05, 20, subsampled=False)
    assert exhaustive.martingale == pytest.approx(0.05 / 20) and exhaustive.subsampling == 0.0
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            split_delta(bad, 3, subsampled=True)


def test_bound_terms_hand_computed():
    # Delta = 18, log 1/P = 5000 nats, m = 1e9, delta1 = 1e-3; s = 10 000, delta2 = 1e-3.
    complexity = martingale_term(18.0, 5000.0, 10**9, 1e-3)
    assert complexity == pytest.approx(18 * math.sqrt((5000 + math.log(1000)) / 2e9))
    sub = hoeffding_term(18.0, 10_000, 1e-3)
    assert sub == pytest.approx(18 * math.sqrt(math.log(1000) / 20_000))
    b = lotfi_bound(4.0, 18.0, 5000.0, 10**9, 1e-3, 10_000, 1e-3)
    assert b.bound == pytest.approx(4.0 + complexity + sub)
    assert lotfi_bound(4.0, 18.0, 5000.0, 10**9, 1e-3).subsampling_term == 0.0


def test_hoeffding_term_is_a_valid_upper_confidence_bound_by_simulation():
    # Bernoulli(0.3) losses (range 1): the sample mean plus the term covers 0.3 in >= 1 - delta of trials,
    # and the exact binomial tail says the term is not grossly loose either.
    rng = np.random.default_rng(0)
    s, delta, trials = 200, 0.1, 20_000
    means = rng.binomial(s, 0.3, size=trials) / s
    slack = hoeffding_term(1.0, s, delta)
    assert np.mean(means + slack < 0.3) <= delta
    assert stats.binom.cdf(math.floor((0.3 - slack) * s), s, 0.3) <= delta
