"""Scoring a bound's units: walk the global batch plan, score each batch, keep only per-unit sums.

The plan (tokenbounds.models.scorer.plan_batches) is fixed by the units and the batch settings alone, and every
batch is reduced at once to the sums the statistics need (tokenbounds.stats.unit_sums), so

- sampled modes keep one row of sums per distinct unit, O(s) whatever the corpus size;
- exhaustive mode adds each batch's totals to one running row, in plan order: O(1) memory in the corpus size, and
  the same bits however the batches are shared out, as long as they are added in plan order.

Per-target arrays live for one batch only.
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from tokenbounds.data.units import Unit
from tokenbounds.models.base import LogitModel
from tokenbounds.models.scorer import plan_batches, score_batch
from tokenbounds.stats.unit_sums import StatisticSet, UnitSums, unit_sums


@dataclass
class ScoredUnits:
    """What scoring a plan leaves: sums per distinct unit (sampled) or one row of corpus totals (exhaustive)."""

    sums: UnitSums
    input_tokens: int  # tokens fed to the model, padding excluded
    seconds: float

    @property
    def scored_targets(self) -> int:
        return int(self.sums.n_targets.sum())


def score_plan(
    model: LogitModel,
    units: Iterable[Unit],
    statistics: StatisticSet,
    *,
    exhaustive: bool,
    max_tokens: int = 8192,
    buffer_units: int = 4096,
    pad_id: int = 0,
    progress: bool = True,
    total_targets: int | None = None,  # for the progress bar
    group_sizes: np.ndarray | None = None,
) -> ScoredUnits:
    """Score every unit; sampled: row u of the sums is the u-th unit given; exhaustive: one row, the totals.

    `group_sizes` (sampled only): the units form consecutive groups of these sizes, one row of sums each (a
    document scored in several windows is one sampled unit).
    """
    centrings = {"alphas": list(statistics.alphas), "ks": list(statistics.ks)} if statistics.centred else {}
    bar = tqdm(total=total_targets, unit="tok", desc="scoring", disable=not progress, dynamic_ncols=True)
    started = time.perf_counter()
    per_batch: list[tuple[np.ndarray, UnitSums]] = []
    totals: UnitSums | None = None
    input_tokens = 0
    for batch in plan_batches(units, model.vocab_size, max_tokens=max_tokens, buffer_units=buffer_units):
        s = score_batch(model, batch, pad_id=pad_id, **centrings)
        sums = unit_sums(statistics, s.n_targets, s.logp, s.rank, s.entropy_bits, s.outside_topk)
        if exhaustive:
            totals = sums.total() if totals is None else totals + sums.total()
        else:
            per_batch.append((batch.unit_ids, sums))
        input_tokens += s.input_tokens
        bar.update(batch.n_targets)
    bar.close()
    seconds = time.perf_counter() - started
    if totals is None and not per_batch:
        raise ValueError("no units to score")
    if not exhaustive:
        unit_ids = np.concatenate([ids for ids, _ in per_batch])
        totals = UnitSums.concat([sums for _, sums in per_batch]).take(np.argsort(unit_ids))
        if group_sizes is not None:
            totals = totals.merge_consecutive(group_sizes)
    return ScoredUnits(totals, input_tokens, seconds)
