"""Smoothing range, smoothed loss and the prior against hand values and independent computations."""

import math

import mpmath
import numpy as np
import pytest

from tokenbounds.stats.prior import choice_bits, complexity_nats, message_code_bits
from tokenbounds.stats.smoothing import loss_range, smoothed_bits


@pytest.mark.parametrize(("vocab", "delta_at_0_1"), [(50_257, 18.79), (32_000, 18.14)])
def test_range_matches_design_reference_values(vocab, delta_at_0_1):
    a, width = loss_range(0.1, vocab)
    assert width == pytest.approx(delta_at_0_1, abs=0.005)
    # Endpoints: all mass on the target, and none.
    assert a == pytest.approx(-math.log2(0.9 + 0.1 / vocab))
    assert a + width == pytest.approx(math.log2(vocab / 0.1))


@pytest.mark.parametrize("alpha", [1e-4, 0.01, 0.5])
def test_smoothed_bits_endpoints_and_mpmath(alpha):
    vocab = 49_152
    a, width = loss_range(alpha, vocab)
    got = smoothed_bits(np.array([0.0, -1e30, -np.inf, math.log(0.3), -40.0]), alpha, vocab)
    assert got[0] == pytest.approx(a, abs=1e-12)
    assert got[1] == pytest.approx(a + width, abs=1e-9)
    assert got[2] == pytest.approx(a + width, abs=1e-9)
    mpmath.mp.dps = 50
    for logp, value in zip([math.log(0.3), -40.0], got[3:], strict=True):
        p = mpmath.e ** mpmath.mpf(logp)
        exact = -mpmath.log((1 - mpmath.mpf(alpha)) * p + mpmath.mpf(alpha) / vocab, 2)
        assert value == pytest.approx(float(exact), rel=1e-12)


def test_alpha_outside_unit_interval_is_refused():
    for alpha in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(ValueError):
            loss_range(alpha, 100)


def test_complexity_prefix_code_hand_values():
    # C = 1024 bits: (1024 + 2 * 10 + log2(pi^2/6)) * ln 2; extra bits add linearly. (Before the normaliser the
    # expected value was 1044 ln 2: a code whose length weights 1/C^2 sum to pi^2/6 > 1, i.e. not a prior.)
    basel = math.log2(math.pi**2 / 6)
    assert complexity_nats(1024) == pytest.approx((1044 + basel) * math.log(2))
    assert complexity_nats(1024, extra_bits=3) == pytest.approx((1047 + basel) * math.log(2))
    assert complexity_nats(1023.2) == complexity_nats(1024)  # a fractional length rounds up to whole bits
    assert choice_bits(8) == 3.0
    with pytest.raises(ValueError):
        complexity_nats(0)
    with pytest.raises(ValueError):
        complexity_nats(10, extra_bits=-1)
    with pytest.raises(ValueError):
        complexity_nats(float("inf"))


def test_prior_is_a_probability_over_every_length():
    """Kraft: the 2^C messages of each length C >= 1, each with mass 2^-(code bits), sum to at most 1 in all."""
    lengths = np.arange(1, 200_001, dtype=np.float64)
    code_bits = np.array([message_code_bits(c) for c in lengths[:50]])
    # 2^C messages of C bits, each of mass 2^-code_bits(C): total mass of length C is 2^(C - code_bits(C))
    mass_head = np.sum(2.0 ** (lengths[:50] - code_bits))
    mass_tail = np.sum(6 / math.pi**2 / lengths[50:] ** 2)  # the same closed form, 2^-(2 log2 C) = 1/C^2
    assert mass_head + mass_tail <= 1.0
    assert mass_head + mass_tail > 1.0 - 1e-5  # and nothing is wasted: the code is complete
    # Without log2(pi^2/6) the first two lengths alone already hold 1 + 1/4 of mass: not a prior.
    assert sum(2.0 ** (c - (c + 2 * math.log2(c))) for c in (1, 2)) > 1.0
