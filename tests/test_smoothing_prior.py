"""Smoothing range, smoothed loss and the prior against hand values and independent computations."""

import math

import mpmath
import numpy as np
import pytest

from tokenbounds.stats.prior import choice_bits, complexity_nats
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
    # C = 1024 bits: (1024 + 2 * 10) * ln 2; extra bits add linearly.
    assert complexity_nats(1024) == pytest.approx(1044 * math.log(2))
    assert complexity_nats(1024, extra_bits=3) == pytest.approx(1047 * math.log(2))
    assert choice_bits(8) == 3.0
    with pytest.raises(ValueError):
        complexity_nats(0)
    with pytest.raises(ValueError):
        complexity_nats(10, extra_bits=-1)
