"""The lambda grid of the empirical-Bernstein bound (`eb.py`), fixed before any data are seen.

eb's bound is a minimum over a finite set of lambdas in (0, 1), each paid for in a union bound (ln |Lambda| + 1 nats
in L), so the grid must be fixed in advance and small, yet fine enough that the best grid point is nearly as good as
the best lambda. psi(lambda) = -ln(1 - lambda) - lambda as in `eb.py`; L = log 1/P(h) + ln(N / delta1).

With A = L/m and B = v, the martingale term is Delta f(lambda),
f(lambda) = A/lambda + B psi(lambda)/lambda. Near lambda -> 0, psi(lambda) = lambda^2/2 + O(lambda^3), so
f ~ A/lambda + B lambda/2, minimised at lambda* = sqrt(2A/B) with f* = sqrt(2AB), and at lambda* e^h

    f(lambda* e^h) / f* = (e^h + e^-h) / 2 = cosh(h).

The worst grid point is the nearest one to lambda* when lambda* sits halfway (in log) between neighbours,
h = (1/2) ln(ratio of neighbours), so rounding costs < 1% iff cosh(h) <= 1.01, h <= acosh(1.01) = 0.14130:
neighbours may differ by a factor e^0.2826 = 1.3266 at most. Away from 0, psi(lambda)/lambda grows faster
than lambda/2 and f is more curved in ln lambda (a geometric grid of ratio 1.32 costs up to 3.7% at
lambda* ~ 0.8); in the logit w = ln(lambda / (1 - lambda)), which is ln lambda near 0 and spreads the points
out near 1, the curvature measured numerically never exceeds its small-lambda value (tests/test_eb.py
compares the grid minimum with a continuous minimisation over lambda on a range of (A, B)). So the grid is
uniform in w with step <= 0.2826: 42 points on [1e-4, 0.9] (step 0.2782, worst rounding cost 0.96%), for
ln 43 = 3.76 nats in L (with the Azuma point) instead of the old 20-point grid's ln 20 = 3.00 (which cost up to
11% at lambda* ~ 0.75 and 2.9% near 0). The extra 0.76 nats matter only when L itself is small: they raise a
C = 0 bound by ~5% (sqrt((L + 0.76) / L) at L ~ 7) but cost < 0.1% once log 1/P(h) >= 500 nats.
"""

import math

import numpy as np

GRID_ROUNDING = 0.01  # the default grid's worst rounding cost, relative to the martingale term
GRID_LOGIT_STEP = 2.0 * math.acosh(1.0 + GRID_ROUNDING)  # 0.2826: the largest step in ln(lambda / (1 - lambda))


def default_lambda_grid(n: int | None = None, smallest: float = 1e-4, largest: float = 0.9) -> np.ndarray:
    """The lambda grid fixed in advance (not data-dependent): uniform in ln(lambda / (1 - lambda)).

    n=None (the default) takes the fewest points whose logit step is <= GRID_LOGIT_STEP = 2 acosh(1.01), so the
    best grid point's martingale term is within 1% of the best continuous lambda in [smallest, largest] (module
    docstring): 42 points on [1e-4, 0.9].
    """
    if n is not None and n < 1:
        raise ValueError("the lambda grid needs at least one value")
    if not 0.0 < smallest <= largest < 1.0:
        raise ValueError(f"need 0 < smallest <= largest < 1, got {smallest}, {largest}")
    lo, hi = math.log(smallest / (1.0 - smallest)), math.log(largest / (1.0 - largest))
    if n is None:
        n = 1 + max(1, math.ceil((hi - lo) / GRID_LOGIT_STEP - 1e-9)) if hi > lo else 1
    if n == 1:
        return np.array([largest])
    grid = 1.0 / (1.0 + np.exp(-np.linspace(lo, hi, n)))
    grid[0], grid[-1] = smallest, largest  # exact end points
    return grid


def check_lambda_grid(lambdas) -> np.ndarray:
    """The grid as a 1-D float array; ValueError unless non-empty, finite, in (0, 1), without repeats."""
    lam = np.asarray(lambdas, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"the lambda grid must be a non-empty 1-D sequence, got shape {lam.shape}")
    if not np.all(np.isfinite(lam)) or np.any(lam <= 0.0) or np.any(lam >= 1.0):
        raise ValueError(f"every lambda must lie in (0, 1), got {lam.tolist()}")
    if np.unique(lam).size != lam.size:
        raise ValueError("the lambda grid has repeated values")
    return lam
