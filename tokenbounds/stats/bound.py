"""One statistic's bound, the one function the pipeline and the coverage simulation both call, and the delta split.

`statistic_bound` turns one statistic's per-unit values (or, when every token was scored, its exact means) into
the numbers of a report row: the empirical value, the complexity (martingale) term, eb's variance term, the
subsampling term, and the bound, clipped at the top of the loss range. It batches over leading axes: the pipeline
passes one row of s units, the simulation thousands of trials at once.

Notation: losses in [a, a + Delta], m tokens, C = log 1/P(h) in nats, delta1 / delta2 the martingale / subsampling
shares of ONE statistic (from `report_delta_split`), s sampled units in sampling order.

lotfi (Lotfi et al. 2024, Theorem 1; `tokenbounds.stats.lotfi`): with probability >= 1 - delta1 - delta2

    R <= UCB_delta2(units) + Delta * sqrt((C + ln 1/delta1) / (2 m)),

where UCB is the chosen subsampling bound on R_hat (hoeffding: mean + Delta sqrt(ln(1/delta2) / (2 s))). When
exhaustive, UCB is the exact R_hat and delta2 = 0. Reported: empirical = mean of the units (or R_hat), subsampling
term = UCB - empirical, complexity term = the martingale term, variance term = 0.

eb (`tokenbounds.stats.eb`, where the theorem is derived): with N = |Lambda| + 1 candidates, L = C + ln(N / delta1),
psi(lambda) = -ln(1 - lambda) - lambda and Z(lambda) = l + Delta (psi(lambda)/lambda) ((c - l)/Delta)^2,

    R <= min( min over lambda in Lambda of  UCB_{delta2/N}(Z(lambda) units) + Delta L / (lambda m),
              UCB_{delta2/N}(loss units) + Delta sqrt(L / (2 m)) )                  (the Azuma point)

The Azuma point is lotfi's bound inside eb's union, so eb is never looser than lotfi by more than the cost of that
union. Reported at the minimising candidate (`point`: "lambda" or "azuma"): empirical = mean unit loss, variance
term = Delta (psi/lambda) * mean_sq (0 at the Azuma point), subsampling term = UCB - empirical - variance term,
complexity term = Delta L / (lambda m) (or Delta sqrt(L/(2m))). When exhaustive the means are exact and the
subsampling term is 0.

Clipping. Every loss is at most a + Delta, so R <= a + Delta always: a bound above it is replaced by a + Delta
(flagged `clipped`); the terms keep their unclipped values, so bound = min(sum of the terms, a + Delta).

The deliberately broken variants of the coverage simulation are expressed through these inputs, never through a
second formula: half of lotfi's martingale term = pass 4 m; half of eb's L / (lambda m) = pass 2 m; no variance
term = unit_sq of zeros; plug-in = the exhaustive branch (ucb=None) fed subsample means.
"""

import math
from dataclasses import dataclass

import numpy as np

from tokenbounds.stats.eb import eb_bounds_batch, eb_exhaustive_batch, psi
from tokenbounds.stats.lambda_grid import check_lambda_grid
from tokenbounds.stats.lotfi import martingale_term
from tokenbounds.stats.split import choose_martingale_share
from tokenbounds.stats.subsample import get_ucb

METHODS = ("lotfi", "eb")


@dataclass(frozen=True)
class StatisticBound:
    """A statistic's bound and its terms, each of the batch shape (0-d for one row)."""

    bound: np.ndarray  # min(unclipped, a + Delta)
    unclipped: np.ndarray  # empirical + complexity + variance + subsampling
    empirical: np.ndarray
    complexity_term: np.ndarray
    variance_term: np.ndarray  # 0 for lotfi
    subsampling_term: np.ndarray  # 0 when exhaustive
    lam: np.ndarray | None  # eb: the minimising grid value (NaN where the Azuma point won); None for lotfi
    mean_sq: np.ndarray | None  # eb: mean of ((c - l)/Delta)^2 over the units (or exact)
    clipped: np.ndarray  # bool: the bound was clipped at a + Delta

    def row(self) -> dict:
        """The report row's numbers (one statistic, 0-d batch)."""
        out = {
            "empirical": float(self.empirical),
            "complexity_term": float(self.complexity_term),
            "variance_term": float(self.variance_term),
            "subsampling_term": float(self.subsampling_term),
            "bound": float(self.bound),
            "clipped": bool(self.clipped),
        }
        if self.lam is not None:
            azuma = bool(np.isnan(self.lam))
            out["point"] = "azuma" if azuma else "lambda"
            out["lambda"] = None if azuma else float(self.lam)
            out["mean_sq"] = float(self.mean_sq)
        return out


def statistic_bound(
    method: str,
    unit_loss,
    unit_sq=None,
    *,
    a: float,
    delta_range: float,
    complexity_nats: float,
    m: int,
    delta1: float,
    delta2: float | None = None,
    ucb: str | None = None,
    lambdas=None,
    horizon: int | None = None,
) -> StatisticBound:
    """The bound of one statistic (batched over leading axes).

    Sampled (ucb given): unit_loss, unit_sq of shape (..., s), one value per sampled unit in sampling order
    (unit_sq: the unit's mean of ((c - l)/Delta)^2, eb only); delta2 is this statistic's subsampling share.
    horizon (sampled, betting only): s is a stopping time <= horizon, fixed in advance (`--target-slack`); the UCB
    is then the anytime-valid one (tokenbounds.stats.subsample).
    Exhaustive (ucb None): unit_loss, unit_sq are the exact means over all m tokens, shape (...); delta2 unused.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    sampled = ucb is not None
    if sampled and delta2 is None:
        raise ValueError("a sampled bound needs its subsampling share delta2")
    loss = np.asarray(unit_loss, dtype=np.float64)
    top = a + delta_range
    if method == "lotfi":
        complexity = martingale_term(delta_range, complexity_nats, m, delta1)
        if sampled:
            empirical = loss.mean(axis=-1)
            subsampling = np.asarray(get_ucb(ucb, horizon)(loss, a, top, delta2)) - empirical
        else:
            empirical, subsampling = loss, np.zeros(loss.shape)
        shape = np.shape(empirical)
        complexity, variance = np.full(shape, complexity), np.zeros(shape)
        lam = mean_sq = None
    else:
        if unit_sq is None:
            raise ValueError("the eb bound needs the per-unit mean squares ((c - l)/Delta)^2")
        sq = np.asarray(unit_sq, dtype=np.float64)
        grid = check_lambda_grid(lambdas)
        kw = dict(a=a, delta_range=delta_range, complexity_nats=complexity_nats, m=m, lambdas=grid, delta1=delta1)
        if sampled:
            bound, best, ucb_best = eb_bounds_batch(loss, sq, delta2=delta2, ucb=ucb, horizon=horizon, **kw)
            empirical, mean_sq = loss.mean(axis=-1), sq.mean(axis=-1)
        else:
            bound, best = eb_exhaustive_batch(loss, sq, **kw)
            empirical, mean_sq = loss, sq
            ucb_best = None
        # Index |Lambda| is the Azuma point (lotfi's term inside eb's union): no lambda, no variance term.
        azuma = best == grid.size
        lam_at = grid[np.minimum(best, grid.size - 1)]
        variance = np.where(azuma, 0.0, delta_range * psi(lam_at) / lam_at * mean_sq)
        lam = np.where(azuma, np.nan, lam_at)
        if sampled:  # the UCB of the winning candidate's mean: Z(lambda), or the loss for the Azuma point
            complexity = bound - ucb_best
            subsampling = ucb_best - empirical - variance
        else:
            complexity = bound - empirical - variance
            subsampling = np.zeros(np.shape(empirical))
    unclipped = empirical + complexity + variance + subsampling
    return StatisticBound(
        bound=np.minimum(unclipped, top),
        unclipped=unclipped,
        empirical=empirical,
        complexity_term=complexity,
        variance_term=variance,
        subsampling_term=subsampling,
        lam=lam,
        mean_sq=mean_sq,
        clipped=unclipped > top,
    )


@dataclass(frozen=True)
class ReportSplit:
    """The delta of a whole report: per statistic, the martingale share delta1 and the subsampling share delta2."""

    delta: float
    n_statistics: int
    subsampled: bool
    data_choice_bits: float
    martingale_share: float  # of each statistic's delta, chosen in advance by `split.choose_martingale_share`
    martingale_total: float
    subsampling_total: float

    @property
    def delta1(self) -> float:
        return self.martingale_total / self.n_statistics

    @property
    def delta2(self) -> float:
        """Per statistic and per data-dependent option: (subsampling share) / 2**data_choice_bits."""
        return self.subsampling_total / self.n_statistics / 2.0**self.data_choice_bits

    def as_dict(self) -> dict:
        out = {
            "delta": self.delta,
            "n_statistics": self.n_statistics,
            "martingale_share": self.martingale_share,
            "martingale_total": self.martingale_total,
            "subsampling_total": self.subsampling_total,
            "martingale_per_statistic": self.delta1,
            "subsampling_per_statistic": self.delta2,
            "data_choice_bits": self.data_choice_bits,
        }
        if self.subsampled:
            out["share_rule"] = (
                "fixed before scoring from C, m, s and the union sizes: minimises Azuma's martingale term plus "
                "Hoeffding's subsampling term (tokenbounds.stats.split)"
            )
        if self.subsampled and self.data_choice_bits > 0:
            out["subsampling_divided_by"] = 2.0**self.data_choice_bits
            out["subsampling_division_reason"] = (
                "an option chosen after seeing the data (--extra-bits, a quantized manifest's extra bits) may have "
                "been chosen by its bound, hence by its subsample: a union over the 2**data_choice_bits options"
            )
        return out


def report_delta_split(
    delta: float,
    n_statistics: int,
    *,
    complexity_nats: float,
    m: int,
    s: int | None,
    n_points: int = 1,
    data_choice_bits: float = 0.0,
) -> ReportSplit:
    """The one delta split of a report (the pipeline's and the simulation's).

    delta is divided equally over the n_statistics reported numbers (every alpha, every k). When s units are
    subsampled, each statistic's share goes to the martingale and the subsampling terms in the proportion
    `split.choose_martingale_share` picks from C, m, s and n_points (the candidates in each term's union:
    |Lambda| + 1 for eb, 1 for lotfi), all known before any token is scored; otherwise (s None) all of it goes to
    the martingale terms. A choice made after seeing the data among 2**b options (b = data_choice_bits) is paid
    in the prior for the martingale term (b bits in log 1/P(h)), but the subsampling term is a statement about the
    subsample given h, and such a choice may have depended on the subsample: a union over the 2**b options divides
    each statistic's delta2 by 2**b. The totals add up to at most delta.
    """
    if not (math.isfinite(data_choice_bits) and data_choice_bits >= 0):
        raise ValueError(f"data_choice_bits must be >= 0, got {data_choice_bits}")
    subsampled = s is not None
    choice = choose_martingale_share(delta, n_statistics, complexity_nats=complexity_nats, m=m, s=s, n_points=n_points)
    return ReportSplit(
        delta=delta,
        n_statistics=n_statistics,
        subsampled=subsampled,
        data_choice_bits=float(data_choice_bits) if subsampled else 0.0,
        martingale_share=choice.martingale_share,
        martingale_total=choice.delta1 * n_statistics,
        subsampling_total=choice.delta2 * n_statistics,
    )
