"""The scale-aware split of one statistic's delta between the martingale and the subsampling terms.

Each reported statistic gets delta_stat = delta / n_statistics (`lotfi.split_delta`), shared between its
martingale term (delta1) and its subsampling term (delta2), delta1 + delta2 = delta_stat. Any split fixed
before the data is valid: the union bound only needs the shares to add up. The split chosen here depends only
on quantities known before any token is scored: the complexity C = log 1/P(h) (nats, from the message length),
the corpus size m, the number of sampled units s, the range Delta and the number of candidates N in each term's
union (|Lambda| + 1 for eb, 1 for lotfi). So it is itself fixed in advance and costs nothing.

It minimises the proxy bound, Azuma's martingale term plus Hoeffding's subsampling term,

    P(delta1) = Delta sqrt((C + ln(N / delta1)) / (2 m)) + Delta sqrt(ln(N / delta2) / (2 s)),
    delta2 = delta_stat - delta1,

over delta1 in (0, delta_stat). Delta is a common factor (the share does not depend on it). Both terms shrink
as their delta grows, at rates d P / d ln(delta1) = -Delta / (2 sqrt(2 m (C + ln(N / delta1)))) and the same
with s and ln(N / delta2): when C or m is large the martingale term hardly moves with delta1 and the optimum
gives most of delta_stat to the subsampling term. The stationary point solves

    delta1 sqrt(m (C + ln(N / delta1))) = delta2 sqrt(s ln(N / delta2));

the left side increases with delta1 and the right side decreases, so there is one root, found by brentq on
the log-odds of the share. The result is compared with the fixed split 1/2 and the better of the two is
returned, so the proxy is never worse than the fixed split's. The eb bounds' real terms (sigma sqrt(2 L v / m)
and a variance-adaptive UCB) depend on ln(1/delta) in the same way up to the unknown variances, which is
why Azuma/Hoeffding are the proxy: they use nothing measured on the data.

Exhaustive evaluation (s = None) has no subsampling term: the martingale share is 1.
"""

import math
from dataclasses import asdict, dataclass

from scipy.optimize import brentq


@dataclass(frozen=True)
class SplitChoice:
    """The chosen share and what it buys on the proxy (in units of Delta: losses in bits when Delta is)."""

    martingale_share: float  # delta1 / delta_stat (1 when exhaustive)
    delta_stat: float  # delta / n_statistics
    delta1: float
    delta2: float  # delta_stat - delta1 (0 when exhaustive); delta1 + delta2 == delta_stat in floating point
    proxy: float  # the proxy bound at the chosen split
    proxy_half: float  # the proxy bound at the fixed 1/2 split (equal to proxy when exhaustive)

    def as_dict(self) -> dict:
        return asdict(self)


def split_proxy(
    delta1: float, delta2: float, *, complexity_nats: float, m: int, s: int | None, delta_range=1.0, n_points=1
) -> float:
    """Delta sqrt((C + ln(N/delta1)) / (2m)) + Delta sqrt(ln(N/delta2) / (2s)) (no second term when s is None)."""
    mart = delta_range * math.sqrt((complexity_nats + math.log(n_points / delta1)) / (2.0 * m))
    if s is None:
        return mart
    return mart + delta_range * math.sqrt(math.log(n_points / delta2) / (2.0 * s))


def _exact_pair(delta_stat: float, share: float) -> tuple[float, float]:
    """(delta1, delta2) near (share, 1 - share) * delta_stat with delta1 + delta2 = delta_stat exactly.

    The larger of the two is rounded, the smaller is delta_stat minus it: that difference is exact in floating
    point (Sterbenz: y/2 <= x <= y implies y - x is representable), so the real sum is delta_stat and so is
    the floating-point sum.
    """
    if share >= 0.5:
        delta1 = min(delta_stat, delta_stat * share)
        return delta1, delta_stat - delta1
    delta2 = min(delta_stat, delta_stat * (1.0 - share))
    return delta_stat - delta2, delta2


def choose_martingale_share(
    delta: float,
    n_statistics: int = 1,
    *,
    complexity_nats: float,
    m: int,
    s: int | None,
    delta_range: float = 1.0,
    n_points: int = 1,
) -> SplitChoice:
    """The martingale share of each statistic's delta, from C, m, s and N alone (module docstring).

    delta: the total failure probability, shared equally by n_statistics statistics; s: units sampled per
    statistic (None: exhaustive, all to the martingale term); n_points: candidates in each term's union
    (len(lambdas) + 1 for eb with its Azuma point, 1 for the paper's bound).
    """
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    if int(n_statistics) != n_statistics or n_statistics < 1:
        raise ValueError(f"need at least one statistic, got {n_statistics}")
    if not (math.isfinite(complexity_nats) and complexity_nats >= 0):
        raise ValueError(f"complexity (nats) must be finite and >= 0, got {complexity_nats}")
    if int(m) != m or m < 1:
        raise ValueError(f"m must be a positive integer, got {m}")
    if s is not None and (int(s) != s or s < 1):
        raise ValueError(f"s must be a positive integer or None, got {s}")
    if not (math.isfinite(delta_range) and delta_range > 0):
        raise ValueError(f"Delta must be > 0, got {delta_range}")
    if int(n_points) != n_points or n_points < 1:
        raise ValueError(f"n_points must be a positive integer, got {n_points}")
    delta_stat = delta / n_statistics
    kw = dict(complexity_nats=float(complexity_nats), m=int(m), s=s, delta_range=float(delta_range), n_points=n_points)
    if s is None:
        proxy = split_proxy(delta_stat, 0.0, **kw)
        return SplitChoice(1.0, delta_stat, delta_stat, 0.0, proxy, proxy)

    def share_of(z: float) -> float:  # logistic, without overflow
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def stationarity(z: float) -> float:  # left side minus right side of the stationary-point equation
        d1 = delta_stat * share_of(z)
        d2 = delta_stat * share_of(-z)
        left = d1 * math.sqrt(m * (complexity_nats + math.log(n_points / d1)))
        return left - d2 * math.sqrt(s * math.log(n_points / d2))

    lo, hi = -30.0, 30.0  # shares from 1e-13 to 1 - 1e-13
    if stationarity(lo) >= 0:
        z = lo
    elif stationarity(hi) <= 0:
        z = hi
    else:
        z = brentq(stationarity, lo, hi, xtol=1e-12)
    candidates = [_exact_pair(delta_stat, share_of(z)), _exact_pair(delta_stat, 0.5)]
    proxies = [split_proxy(d1, d2, **kw) for d1, d2 in candidates]
    pick = 0 if proxies[0] <= proxies[1] else 1
    d1, d2 = candidates[pick]
    return SplitChoice(d1 / delta_stat, delta_stat, d1, d2, proxies[pick], proxies[1])
