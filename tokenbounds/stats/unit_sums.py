"""Per-unit sums of every reported statistic: all the bound needs from the scored targets, and nothing more.

The statistics j = 1..S are each smoothing alpha (the loss l_j(i) = -log2 p_alpha(x_i), in [a_j, a_j + Delta_j])
and then each k (the top-k error l_j(i) = 1[rank_i >= k], in [0, 1]). A unit u with targets i = 1..n_u keeps

    n_u
    L_uj = sum_i l_j(i)                                   loss sum
    Q_uj = sum_i l_j(i)^2                                 (the spread of the targets' losses, reported)
    C_uj = sum_i ((c_j(i) - l_j(i)) / Delta_j)^2          (eb only; c_j(i) the centring, a function of x_<i)
    P_u  = sum of ln p(x_i) over targets with p > 0,  Z_u = #{i : p(x_i) = 0}     (the unsmoothed NLL)

Sums are additive. A unit of several model windows (a document scored in sliding windows) is the sum of its
windows' rows, and the corpus' totals (exhaustive mode) the sum of every unit's. So scoring keeps one row per
distinct sampled unit, or one row in all for the exhaustive sums, never an array per target of the corpus.

A sampled unit's value is its mean L_uj / n_u (its centred square C_uj / n_u), so that E[value] = R_hat when
units are drawn in proportion to n_u; the exhaustive empirical risk is sum_u L_uj / sum_u n_u.
"""

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from tokenbounds.stats.smoothing import loss_range, smoothed_bits
from tokenbounds.stats.topk import topk_error


@dataclass(frozen=True)
class StatisticSet:
    """The reported statistics, in report-row order: every alpha, then every k."""

    alphas: tuple[float, ...]
    ks: tuple[int, ...]
    vocab_size: int
    centred: bool  # keep the eb centred squares C_uj (needs the scorer's centrings)

    @property
    def size(self) -> int:
        return len(self.alphas) + len(self.ks)

    def ranges(self) -> list[tuple[float, float]]:
        """(a_j, Delta_j) of every statistic: l_j lies in [a_j, a_j + Delta_j]."""
        return [loss_range(alpha, self.vocab_size) for alpha in self.alphas] + [(0.0, 1.0)] * len(self.ks)

    def labels(self) -> list[str]:
        return [f"alpha={alpha!r}" for alpha in self.alphas] + [f"k={k}" for k in self.ks]


@dataclass
class UnitSums:
    """The sums above for U units: row u is unit u (or, after `total`, one row for all of them)."""

    n_targets: np.ndarray  # (U,) int64
    loss: np.ndarray  # (U, S) float64, L
    loss_sq: np.ndarray  # (U, S) float64, Q
    centred_sq: np.ndarray | None  # (U, S) float64, C (eb only)
    log_p: np.ndarray  # (U,) float64, P (nats)
    zero_p: np.ndarray  # (U,) int64, Z

    def __len__(self) -> int:
        return len(self.n_targets)

    def _map(self, function, *others: "UnitSums") -> "UnitSums":
        """The same function of every array (with the matching arrays of `others`); centred_sq stays None if None."""
        names = [f.name for f in dataclasses.fields(UnitSums)]  # (astuple would deep-copy every array)
        columns = ([getattr(u, name) for u in (self, *others)] for name in names)
        return UnitSums(*(None if c[0] is None else function(*c) for c in columns))

    def total(self) -> "UnitSums":
        """One row: the sums over every unit (in row order, so equal inputs give equal bits)."""
        return self._map(lambda a: a.sum(axis=0, keepdims=True))

    def take(self, rows: np.ndarray) -> "UnitSums":
        """Rows `rows` (e.g. one per draw, in sampling order)."""
        return self._map(lambda a: a[rows])

    def merge_consecutive(self, sizes: np.ndarray) -> "UnitSums":
        """Rows merged in consecutive runs of `sizes` (e.g. a document's windows into the document): sums add."""
        sizes = np.asarray(sizes, dtype=np.int64)
        if sizes.min(initial=1) < 1 or int(sizes.sum()) != len(self):
            raise ValueError("group sizes must be >= 1 and cover every row")
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        return self._map(lambda a: np.add.reduceat(a, starts, axis=0))

    def unit_means(self, j: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Statistic j's sampled value L_uj / n_u of every unit and, for eb, its centred square C_uj / n_u."""
        loss = self.loss[:, j] / self.n_targets
        return loss, None if self.centred_sq is None else self.centred_sq[:, j] / self.n_targets

    def target_std(self, j: int) -> float:
        """The standard deviation of statistic j's loss over all the targets summed here (population form)."""
        n = float(self.n_targets.sum())
        mean = float(self.loss[:, j].sum()) / n
        return math.sqrt(max(float(self.loss_sq[:, j].sum()) / n - mean * mean, 0.0))

    def unsmoothed_nll(self) -> dict:
        """{"mean_nll_bits_unsmoothed", "zero_probability_targets"}: null with the count where some p(y) = 0.

        A -inf logit is a legal p = 0, and the unsmoothed NLL is then +inf: a true statement about the model, not
        a bound (the bounds use the smoothed loss, which is finite), but JSON has no infinity.
        """
        zero, n = int(self.zero_p.sum()), int(self.n_targets.sum())
        mean = None if zero or not n else float(-self.log_p.sum() / n / math.log(2.0))
        return {"mean_nll_bits_unsmoothed": mean, "zero_probability_targets": zero}

    @staticmethod
    def concat(parts: list["UnitSums"]) -> "UnitSums":
        return parts[0]._map(lambda *arrays: np.concatenate(arrays), *parts[1:])

    def __add__(self, other: "UnitSums") -> "UnitSums":
        """Row-wise sums (the same units, or two totals)."""
        return self._map(np.add, other)


def unit_sums(
    statistics: StatisticSet,
    n_targets: np.ndarray,
    logp: np.ndarray,
    rank: np.ndarray,
    entropy_bits: np.ndarray | None = None,
    outside_topk: np.ndarray | None = None,
) -> UnitSums:
    """The sums of units whose targets lie consecutively in the per-target arrays (unit u holds n_targets[u]).

    logp: natural-log model probability of each target; rank: #{v : z_v >= z_y} - 1 (ties against the model);
    entropy_bits (T, n_alphas) and outside_topk (T, n_ks): the eb centrings, needed when `statistics.centred`.
    The centring only has to lie in the loss range, so the scorer's float32 rounding below a_j (or outside [0, 1])
    is clipped away.
    """
    n_targets = np.asarray(n_targets, dtype=np.int64)
    if n_targets.min(initial=1) < 1 or int(n_targets.sum()) != len(logp):
        raise ValueError("every unit needs >= 1 target and the per-target arrays one entry per target")
    logp = np.asarray(logp, dtype=np.float64)
    losses = [smoothed_bits(logp, alpha, statistics.vocab_size) for alpha in statistics.alphas]
    losses += [topk_error(rank, k) for k in statistics.ks]
    loss = np.stack(losses, axis=1)  # (T, S)
    starts = np.concatenate([[0], np.cumsum(n_targets)[:-1]])
    centred = None
    if statistics.centred:
        centrings = [np.asarray(entropy_bits, dtype=np.float64), np.asarray(outside_topk, dtype=np.float64)]
        centring = np.concatenate([c.reshape(len(logp), -1) for c in centrings], axis=1)
        low = np.array([a for a, _ in statistics.ranges()])
        width = np.array([d for _, d in statistics.ranges()])
        centring = np.clip(centring, low, low + width)
        centred = np.add.reduceat(((centring - loss) / width) ** 2, starts, axis=0)
    positive = np.isfinite(logp)
    return UnitSums(
        n_targets=n_targets,
        loss=np.add.reduceat(loss, starts, axis=0),
        loss_sq=np.add.reduceat(loss * loss, starts, axis=0),
        centred_sq=centred,
        log_p=np.add.reduceat(np.where(positive, logp, 0.0), starts),
        zero_p=np.add.reduceat((~positive).astype(np.int64), starts),
    )
