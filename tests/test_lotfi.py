"""The paper's bound and the delta split against independent computations and a simulation."""

import math

import numpy as np
import pytest
from scipy import stats

from tokenbounds.stats.bound import report_delta_split, statistic_bound
from tokenbounds.stats.lotfi import martingale_term


def test_split_adds_up_and_divides_over_every_statistic():
    scale = {"complexity_nats": 5000.0, "m": 10**6}
    split = report_delta_split(0.05, 20, s=4000, **scale)
    assert split.delta1 * 20 + split.delta2 * 20 == pytest.approx(0.05)
    assert split.delta1 == pytest.approx(0.05 / 20 * split.martingale_share)
    assert 0.0 < split.martingale_share < 0.5  # a large C needs little delta in the martingale term
    exhaustive = report_delta_split(0.05, 20, s=None, **scale)
    assert exhaustive.delta1 == pytest.approx(0.05 / 20) and exhaustive.delta2 == 0.0
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            report_delta_split(bad, 3, s=100, **scale)


def test_bound_terms_hand_computed():
    # Delta = 18, log 1/P = 5000 nats, m = 1e9, delta1 = 1e-3; s = 10 000 units all at 4.0, delta2 = 1e-3.
    complexity = martingale_term(18.0, 5000.0, 10**9, 1e-3)
    assert complexity == pytest.approx(18 * math.sqrt((5000 + math.log(1000)) / 2e9))
    common = {"a": 0.0, "delta_range": 18.0, "complexity_nats": 5000.0, "m": 10**9, "delta1": 1e-3}
    b = statistic_bound("lotfi", np.full(10_000, 4.0), delta2=1e-3, ucb="hoeffding", **common)
    sub = 18 * math.sqrt(math.log(1000) / 20_000)
    assert float(b.subsampling_term) == pytest.approx(sub, rel=1e-12)
    assert float(b.bound) == pytest.approx(4.0 + complexity + sub, rel=1e-12)
    exhaustive = statistic_bound("lotfi", 4.0, **common)
    assert float(exhaustive.subsampling_term) == 0.0 and float(exhaustive.bound) == pytest.approx(4.0 + complexity)


def test_bound_is_clipped_at_the_top_of_the_loss_range_and_batches():
    common = {"a": 1.0, "delta_range": 2.0, "complexity_nats": 1e4, "m": 100, "delta1": 0.01}
    b = statistic_bound("lotfi", np.array([1.5, 2.9]), **common)  # a huge complexity term
    np.testing.assert_array_equal(b.bound, [3.0, 3.0])
    assert b.clipped.all() and np.all(b.unclipped > 3.0)
    rows = np.random.default_rng(0).uniform(1.0, 3.0, size=(3, 4, 50))
    batch = statistic_bound("lotfi", rows, delta2=0.01, ucb="betting", **{**common, "complexity_nats": 1.0})
    assert batch.bound.shape == (3, 4)
    one = statistic_bound("lotfi", rows[2, 1], delta2=0.01, ucb="betting", **{**common, "complexity_nats": 1.0})
    assert float(one.bound) == pytest.approx(float(batch.bound[2, 1]), abs=1e-9)  # brentq vs bisection


def test_report_split_divides_the_subsampling_share_over_data_choices():
    scale = {"complexity_nats": 100.0, "m": 10**5}
    plain = report_delta_split(0.05, 20, s=1000, **scale)
    split = report_delta_split(0.05, 20, s=1000, data_choice_bits=3.0, **scale)
    assert split.delta1 == pytest.approx(plain.delta1) and split.delta2 == pytest.approx(plain.delta2 / 8)
    record = split.as_dict()
    assert record["subsampling_divided_by"] == 8.0 and "union" in record["subsampling_division_reason"]
    assert record["martingale_total"] + record["subsampling_total"] == pytest.approx(0.05)
    assert report_delta_split(0.05, 20, s=None, data_choice_bits=3.0, **scale).delta1 == pytest.approx(0.05 / 20)
    with pytest.raises(ValueError):
        report_delta_split(0.05, 20, s=1000, data_choice_bits=-1.0, **scale)


def test_hoeffding_subsampling_term_is_a_valid_upper_confidence_bound_by_simulation():
    # Bernoulli(0.3) losses (range 1): the sample mean plus the term covers 0.3 in >= 1 - delta of trials,
    # and the exact binomial tail says the term is not grossly loose either.
    rng = np.random.default_rng(0)
    s, delta, trials = 200, 0.1, 20_000
    units = (rng.random((trials, s)) < 0.3).astype(np.float64)
    b = statistic_bound(
        "lotfi", units, a=0.0, delta_range=1.0, complexity_nats=0.0, m=1, delta1=0.5, delta2=delta, ucb="hoeffding"
    )
    assert np.mean(b.empirical + b.subsampling_term < 0.3) <= delta
    slack = float(b.subsampling_term[0])
    assert stats.binom.cdf(math.floor((0.3 - slack) * s), s, 0.3) <= delta
