"""The scale-aware delta split: valid (shares add up exactly), data-free, never worse than 1/2 on its proxy."""

import math

import numpy as np
import pytest
from scipy import optimize

from tokenbounds.stats.split import choose_martingale_share, split_proxy

SCALES = [
    (0.0, 2000, 200, 1),
    (0.0, 4000, 60, 9),
    (50.0, 10**4, 500, 43),
    (1e4, 10**8, 2000, 43),
    (1e6, 10**9, 4000, 43),
    (3e7, 10**10, 1000, 1),
]


@pytest.mark.parametrize("delta", [1e-6, 0.01, 0.05, 0.3, 0.9])
@pytest.mark.parametrize("n_statistics", [1, 3, 10])
@pytest.mark.parametrize(("complexity", "m", "s", "n_points"), SCALES)
def test_split_is_valid_and_never_worse_than_half(delta, n_statistics, complexity, m, s, n_points):
    ch = choose_martingale_share(delta, n_statistics, complexity_nats=complexity, m=m, s=s, n_points=n_points)
    assert ch.delta_stat == delta / n_statistics
    assert ch.delta1 + ch.delta2 == ch.delta_stat  # exactly, in floating point
    assert 0.0 < ch.delta1 < ch.delta_stat and 0.0 < ch.delta2 < ch.delta_stat
    assert 0.0 < ch.martingale_share < 1.0
    kw = dict(complexity_nats=complexity, m=m, s=s, n_points=n_points)
    half = split_proxy(ch.delta_stat / 2, ch.delta_stat / 2, **kw)
    assert ch.proxy_half == pytest.approx(half, rel=1e-12)
    assert ch.proxy <= ch.proxy_half
    assert ch.proxy == pytest.approx(split_proxy(ch.delta1, ch.delta2, **kw), rel=1e-12)


@pytest.mark.parametrize(("complexity", "m", "s", "n_points"), SCALES)
def test_split_is_the_proxy_minimum(complexity, m, s, n_points):
    """Against an independent bounded minimisation of the proxy over the share."""
    delta = 0.05
    ch = choose_martingale_share(delta, complexity_nats=complexity, m=m, s=s, n_points=n_points)

    def proxy(z):
        share = 1 / (1 + math.exp(-z))
        return split_proxy(delta * share, delta * (1 - share), complexity_nats=complexity, m=m, s=s, n_points=n_points)

    res = optimize.minimize_scalar(proxy, bounds=(-30, 30), method="bounded", options={"xatol": 1e-9})
    assert ch.proxy <= res.fun * (1 + 1e-9)
    scan = min(proxy(z) for z in np.linspace(-30, 30, 6001))
    assert ch.proxy <= scan * (1 + 1e-12)


def test_split_moves_delta_to_the_subsampling_term_when_complexity_is_large():
    shares = [
        choose_martingale_share(0.05, 4, complexity_nats=c, m=10**6, s=1000, n_points=43).martingale_share
        for c in (0.0, 10.0, 1e3, 1e5, 1e7)
    ]
    assert all(b < a for a, b in zip(shares, shares[1:], strict=False))
    assert shares[0] < 0.5 and shares[-1] < 1e-3
    # and when m is large (the martingale term is small and flat) or s is small (subsampling dominates)
    by_m = [choose_martingale_share(0.05, complexity_nats=100.0, m=m, s=500).martingale_share for m in (10**3, 10**9)]
    assert by_m[1] < by_m[0]
    by_s = [choose_martingale_share(0.05, complexity_nats=100.0, m=10**4, s=s).martingale_share for s in (50, 50000)]
    assert by_s[0] < by_s[1]
    # the proxy gain over the fixed 1/2 split is real where the scales differ
    ch = choose_martingale_share(0.05, 8, complexity_nats=1e5, m=10**9, s=2000, n_points=43)
    assert ch.proxy < 0.98 * ch.proxy_half


def test_exhaustive_gives_everything_to_the_martingale_term():
    ch = choose_martingale_share(0.05, 5, complexity_nats=100.0, m=10**6, s=None)
    assert ch.martingale_share == 1.0 and ch.delta2 == 0.0 and ch.delta1 == ch.delta_stat == 0.01
    assert ch.proxy == ch.proxy_half == pytest.approx(math.sqrt((100.0 + math.log(1 / 0.01)) / (2 * 10**6)))


def test_depends_on_no_data_and_delta_range_only_scales_the_proxy():
    a = choose_martingale_share(0.05, 2, complexity_nats=300.0, m=10**5, s=400, delta_range=1.0)
    b = choose_martingale_share(0.05, 2, complexity_nats=300.0, m=10**5, s=400, delta_range=18.8)
    assert a.martingale_share == b.martingale_share and a.delta1 == b.delta1
    assert b.proxy == pytest.approx(18.8 * a.proxy, rel=1e-12)
    assert a == choose_martingale_share(0.05, 2, complexity_nats=300.0, m=10**5, s=400)  # deterministic
    assert set(a.as_dict()) >= {"martingale_share", "delta1", "delta2", "proxy", "proxy_half"}


@pytest.mark.parametrize(
    "kw",
    [
        {"delta": 0.0},
        {"delta": 1.0},
        {"n_statistics": 0},
        {"complexity_nats": -1.0},
        {"complexity_nats": math.inf},
        {"m": 0},
        {"m": 2.5},
        {"s": 0},
        {"delta_range": 0.0},
        {"n_points": 0},
    ],
)
def test_bad_inputs(kw):
    args = {"delta": 0.05, "n_statistics": 1, "complexity_nats": 10.0, "m": 1000, "s": 100, **kw}
    delta, n_stat = args.pop("delta"), args.pop("n_statistics")
    with pytest.raises(ValueError):
        choose_martingale_share(delta, n_stat, **args)
