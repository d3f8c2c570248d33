"""Scoring a bound's units: walk the global batch plan, score each batch, keep only per-unit sums.

The plan (tokenbounds.models.scorer.plan_batches) is fixed by the units and the batch settings alone, and every
batch is reduced at once to the sums the statistics need (tokenbounds.stats.unit_sums), so

- sampled modes keep one row of sums per distinct unit, O(s) whatever the corpus size;
- exhaustive mode adds each batch's totals to one running row, in plan order: O(1) memory in the corpus size, and
  the same bits however the batches are shared out, as long as they are added in plan order.

Per-target arrays live for one batch only.

Under torchrun (tokenbounds.distributed) every rank walks the same plan, and the batches still to score are dealt
out in rounds of one per rank: in each round rank r scores the round's r-th batch, and every rank gathers the
round's sums and takes them in plan order, exactly as one process would. A batch's sums are a function of the batch
alone, so the result is the same bits whatever the number of processes, and a round holds one batch per rank: memory
stays bounded however long the plan.

With a run directory (tokenbounds.run_dir), rank 0 records every finished batch (exhaustive: the running totals and
the last batch they cover); a resumed run takes the recorded batches as they were (they are skipped by every rank)
and scores the rest, and so assembles the same sums in the same order.
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from tokenbounds.data.units import Unit
from tokenbounds.distributed import World
from tokenbounds.errors import UserError
from tokenbounds.models.base import LogitModel
from tokenbounds.models.scorer import Batch, Workspace, plan_batches, score_batch
from tokenbounds.run_dir import Record, RunDir
from tokenbounds.stats.unit_sums import StatisticSet, UnitSums, unit_sums

ALONE = World()  # one process: no torchrun


@dataclass
class ScoredUnits:
    """What scoring a plan leaves: sums per distinct unit (sampled) or one row of corpus totals (exhaustive)."""

    sums: UnitSums
    input_tokens: int  # tokens fed to the model, padding excluded
    seconds: float  # this process's scoring, recorded batches excepted
    processes: int = 1  # ranks that scored
    resumed_batches: int = 0  # batches taken from the run directory instead of scored

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
    world: World = ALONE,
    run: RunDir | None = None,
) -> ScoredUnits:
    """Score every unit; sampled: row u of the sums is the u-th unit given; exhaustive: one row, the totals.

    `group_sizes` (sampled only): the units form consecutive groups of these sizes, one row of sums each (a
    document scored in several windows is one sampled unit). `world`: the ranks sharing the work; every rank calls
    this with the same arguments and gets the same result (every round's sums reach every rank, so that every rank
    can take the same decisions on them). `run` (rank 0 only): the run directory that records every finished
    batch; a run that calls this several times (rounds of units) records each call as the next part.
    """
    centrings = {"alphas": list(statistics.alphas), "ks": list(statistics.ks)} if statistics.centred else {}
    part = run.next_part() if run is not None else 0
    recorded = world.broadcast(_recorded(run, part, exhaustive) if run is not None else {})  # rank 0's run dir
    bar = tqdm(
        total=total_targets, unit="tok", desc="scoring", disable=not (progress and world.leader), dynamic_ncols=True
    )
    started = time.perf_counter()
    per_batch: list[tuple[np.ndarray, UnitSums]] = []
    last = max(recorded, default=-1)  # exhaustive: the running totals cover batches 0..last
    totals: UnitSums | None = recorded[last].sums if exhaustive and recorded else None
    input_tokens = recorded[last].input_tokens if exhaustive and recorded else 0
    resumed = last + 1 if exhaustive else len(recorded)

    def take(batches: list[Batch], results: list[tuple[UnitSums, int]], new: bool = True) -> None:
        """Add scored (or recorded) batches in plan order; rank 0 records the newly scored ones."""
        nonlocal totals, input_tokens
        for batch, (sums, tokens) in zip(batches, results, strict=True):
            if exhaustive:
                totals = sums.total() if totals is None else totals + sums.total()
            else:
                per_batch.append((batch.unit_ids, sums))
            input_tokens += tokens
            bar.update(batch.n_targets)
        if run is None or not new:
            return
        if exhaustive:
            run.checkpoint(Record(batches[-1].index, None, totals, input_tokens, part))
        else:
            for batch, (sums, tokens) in zip(batches, results, strict=True):
                run.append(Record(batch.index, _first_targets(batch), sums, tokens, part))

    workspace = Workspace()  # the logits and the statistics' scratch of one batch after another

    def score_round(batches: list[Batch]) -> None:
        """Rank r scores the r-th batch of the round; every rank receives the round's sums."""
        mine = None
        if world.rank < len(batches):
            s = score_batch(model, batches[world.rank], pad_id=pad_id, workspace=workspace, **centrings)
            sums = unit_sums(statistics, s.n_targets, s.logp, s.rank, s.entropy_bits, s.outside_topk)
            mine = (sums, s.input_tokens)
        take(batches, world.all_gather(mine)[: len(batches)])

    round_: list[Batch] = []
    for batch in plan_batches(units, model.vocab_size, max_tokens=max_tokens, buffer_units=buffer_units):
        if exhaustive and batch.index <= last:
            bar.update(batch.n_targets)  # inside the recorded running totals
            continue
        if batch.index in recorded:
            take([batch], [_recorded_sums(recorded[batch.index], batch)], new=False)
            continue
        round_.append(batch)
        if len(round_) == world.size:
            score_round(round_)
            round_ = []
    if round_:
        score_round(round_)
    bar.close()
    seconds = time.perf_counter() - started
    if totals is None and not per_batch:
        raise ValueError("no units to score")
    if not exhaustive:
        unit_ids = np.concatenate([ids for ids, _ in per_batch])
        totals = UnitSums.concat([sums for _, sums in per_batch]).take(np.argsort(unit_ids))
        if group_sizes is not None:
            totals = totals.merge_consecutive(group_sizes)
    return ScoredUnits(totals, input_tokens, seconds, world.size, resumed)


def _recorded(run: RunDir, part: int, exhaustive: bool) -> dict[int, Record]:
    """The run directory's records of this part, by batch index (exhaustive: only the last running totals)."""
    records = {r.index: r for r in run.records if r.part == part}
    if exhaustive and records:
        last = max(records)
        return {last: records[last]}
    return records


def _first_targets(batch: Batch) -> np.ndarray:
    """Each unit's first target position: what a record says it holds, so that a resume can check it."""
    return np.array([u.positions[0] for u in batch.units], dtype=np.int64)


def _recorded_sums(record: Record, batch: Batch) -> tuple[UnitSums, int]:
    """A recorded batch's sums, once its units are checked to be the plan's."""
    if record.targets is None or not np.array_equal(record.targets, _first_targets(batch)):
        raise UserError(f"the run directory's batch {batch.index} holds other units than this run's plan: refusing it")
    return record.sums, record.input_tokens
