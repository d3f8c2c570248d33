"""`bound`: sample units -> score them -> statistics -> report. The one place where the parts meet.

Every number in the report holds simultaneously with probability >= 1 - delta: delta is split over all
reported statistics (one per smoothing alpha, one per top-k) and, when units are subsampled, between the
martingale and the subsampling terms (tokenbounds.stats.bound.report_delta_split); the eb method further splits
each statistic's share over its lambda grid (tokenbounds.stats.eb). The prior is fixed before the data are
looked at: the user's message length or the checkpoint's compressed size, plus extra bits for any choice
made after seeing data. Sampled units are drawn after the hypothesis is fixed, from the bound's own random
stream (tokenbounds.streams.BOUND_UNITS: never a training stream, whatever the seeds). Every row's numbers come
from tokenbounds.stats.bound.statistic_bound, the function the coverage simulation exercises.

Defaults: the tightest valid configuration, eb + block units (stride = context) + the betting UCB; the paper's
configuration is lotfi + token + hoeffding (`bound --paper`).

Sampled modes estimate the empirical risk R_hat = (1/m) sum_i l_i from s units drawn with replacement:
token mode draws positions uniformly; block mode draws blocks with probability proportional to their length
and uses the block's mean loss, so in both cases E[unit value] = R_hat.

`--unit document|sequence` bounds another quantity, the expected mean loss of one i.i.d. document (or aligned
sequence), by Hoeffding over the n units (tokenbounds.data.documents derives it): units are drawn uniformly over
the n units (or all scored), a unit's value is its mean loss, and n takes m's place in the complexity term.
"""

import functools
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from tokenbounds.data.documents import WholeUnits, whole_units
from tokenbounds.data.shards import Corpus, open_corpus
from tokenbounds.data.units import ContextRule, Unit
from tokenbounds.distributed import World, join_world
from tokenbounds.execution import ScoredUnits, score_plan
from tokenbounds.hypothesis import Hypothesis, open_hypothesis
from tokenbounds.report.io import check_finite
from tokenbounds.request import BoundRequest, validate
from tokenbounds.run_dir import RUN_DIR_FLAGS, RunDir, run_identity
from tokenbounds.stats.bound import ReportSplit, report_delta_split, statistic_bound
from tokenbounds.stats.centring import CENTRING
from tokenbounds.stats.lambda_grid import default_lambda_grid
from tokenbounds.stats.stopping import round_schedule, sample_until
from tokenbounds.stats.unit_sums import StatisticSet, UnitSums
from tokenbounds.streams import BOUND_UNITS, describe, stream

__all__ = ["BoundRequest", "compute_bound", "compute_bound_with_units", "plan_units", "plan_whole_units"]

BOUNDED_QUANTITY = {
    "token": "R = (1/m) sum_i E[l_i | x_<i]: the mean over the corpus' m tokens of each token's expected loss given "
    "its past under the data-generating process (every token weighs the same; no independence assumed)",
    "document": "E_D[mean loss of D's tokens] for one document D of the process the corpus' n documents are assumed "
    "i.i.d. draws of (every document weighs the same, whatever its length)",
    "sequence": "E_S[mean loss of S's tokens] for one aligned sequence S of the process the corpus' n sequences are "
    "assumed i.i.d. draws of (every sequence weighs the same)",
}
WINDOWS_PER_CALL = 16384  # model windows scored per call of score_plan for document / sequence units


@dataclass
class UnitPlan:
    """What to score and how the draws map onto it: the drawn units' keys, built into units only when scored."""

    rule: ContextRule
    corpus: Corpus
    keys: np.ndarray | None  # sampled modes: the distinct drawn units' keys (first target position), sorted
    draws: np.ndarray | None  # per draw, in sampling order: index of its unit in `keys`; None if exhaustive

    def units(self, indices: np.ndarray | None = None) -> Iterable[Unit]:
        """Exhaustive: every unit of the corpus (an iterator); sampled: the units at these indices of `keys`."""
        if self.draws is None:
            return self.rule.exhaustive_units(self.corpus)
        return [self.rule.unit_at(self.corpus, int(self.keys[i])) for i in indices]


def plan_units(req: BoundRequest, corpus: Corpus, rng: np.random.Generator) -> UnitPlan:
    """Draw the units (with replacement) and keep each distinct one once: duplicates cost no forward pass."""
    rule = req.context_rule()
    if req.mode == "exhaustive":
        return UnitPlan(rule, corpus, None, None)
    return UnitPlan(rule, corpus, *rule.draw(corpus, req.samples, rng))


def compute_bound(req: BoundRequest) -> dict:
    """Run the whole bound and return the JSON report."""
    return compute_bound_with_units(req)[0]


def compute_bound_with_units(req: BoundRequest) -> tuple[dict, dict | None]:
    """The JSON report and, for sampled modes, the per-unit values every row's bound was computed from.

    The units dict (what `bound --units-out FILE.npz` writes): `statistics`, one label per report row in row order;
    `unit_loss` of shape (rows, s), each row's unit values in sampling order; `unit_sq` (eb only), the units' means
    of ((c - l)/Delta)^2; `draws`, each draw's index among the distinct units scored. None when exhaustive.

    Under torchrun every rank runs this, scores its share and gets the same report; rank 0 alone writes.
    """
    world = join_world()
    try:
        return _compute(req, world)
    finally:
        world.close()


def _compute(req: BoundRequest, world: World) -> tuple[dict, dict | None]:
    world.agree(asdict(req))
    rule = validate(req)
    corpus = open_corpus(req.data, req.dtype, req.eot)
    world.device(req.device)
    # Fixed, checked and priced before any token is scored, by rank 0; the others run its choices (distributed.py).
    hypothesis = world.share_hypothesis(open_hypothesis(req, rule, corpus) if world.leader else None, req, rule, corpus)
    if req.verify_data and world.leader:  # opt-in: one full read of the corpus (hashes against prepare's, ids < V)
        corpus.verify(hypothesis.model.vocab_size, progress=req.progress)
    if req.unit != "token":
        return _whole_unit_bound(req, corpus, hypothesis, world)
    plan = plan_units(req, corpus, stream(req.seed, BOUND_UNITS))
    eb = req.method == "eb"
    statistics = StatisticSet(tuple(req.alphas), tuple(req.ks), hypothesis.model.vocab_size, centred=eb)
    lambdas = np.asarray(req.lambdas if req.lambdas is not None else default_lambda_grid())
    split = report_delta_split(  # fixed before any draw: with --target-slack, s is the horizon --samples
        req.delta,
        statistics.size,
        complexity_nats=hypothesis.prior.complexity_nats,
        m=corpus.n_tokens,
        s=None if plan.draws is None else len(plan.draws),
        n_points=len(lambdas) + 1 if eb else 1,
        data_choice_bits=hypothesis.prior.data_choice_bits,
    )
    bound = functools.partial(_rows, req, hypothesis, corpus.n_tokens, statistics, split, lambdas)
    run = None  # rank 0 records every finished batch in --run-dir
    if req.run_dir is not None and world.leader:
        run = RunDir.open(req.run_dir, run_identity(req, hypothesis, corpus), resume=req.resume)
    score = functools.partial(
        score_plan,
        hypothesis.model,
        statistics=statistics,
        max_tokens=req.batch_tokens,
        pad_id=corpus.eot,
        progress=req.progress,
        world=world,
        run=run,
    )
    stopping = None
    try:
        if plan.draws is None:
            scored = score(plan.units(), exhaustive=True, total_targets=corpus.n_tokens)
            if scored.scored_targets != corpus.n_tokens:
                raise RuntimeError(f"exhaustive scoring covered {scored.scored_targets} of {corpus.n_tokens} tokens")
            (results, units), distinct = bound(scored.sums, None), None
        else:
            scored, (results, units), distinct, stopping = _sampled_rounds(req, plan, score, bound)
    finally:
        if run is not None:
            run.close()
    report = _report(req, hypothesis, corpus, plan, scored, split, lambdas, results, distinct, stopping)
    check_finite(report)  # a NaN or infinity here is a bug: refuse it rather than print or write it
    return report, units


def _sampled_rounds(req, plan: UnitPlan, score, bound):
    """Score the draws, in one round, or (--target-slack) in rounds until the best bits row is tight enough.

    A round scores the distinct units its draws need that no earlier round scored, so no unit is scored twice.
    Returns the scores, the rows and units of the round it stopped at, its distinct units and the stopping record.
    """
    horizon = len(plan.draws)
    row_of = np.full(len(plan.keys), -1, dtype=np.int64)  # each distinct unit's row among those scored so far
    parts: list[ScoredUnits] = []
    outcome = {}

    def slack_after(t: int) -> float:
        needed = np.unique(plan.draws[:t])
        new = needed[row_of[needed] < 0]
        if len(new):
            units = plan.units(new)
            parts.append(score(units, exhaustive=False, total_targets=sum(u.n_targets for u in units)))
            row_of[new] = np.arange(len(new)) + sum(len(p.sums) for p in parts[:-1])
        sums = UnitSums.concat([p.sums for p in parts])
        draws = row_of[plan.draws[:t]]
        outcome.update(rows=bound(sums.take(draws), draws, horizon=horizon if req.target_slack else None))
        outcome.update(distinct=int(len(needed)))
        best = min((r for r in outcome["rows"][0] if r["statistic"] == "bits_per_token"), key=lambda r: r["bound"])
        return best["subsampling_term"]

    stopping = None
    if req.target_slack is None:
        slack_after(horizon)
    else:
        used, slacks = sample_until(slack_after, round_schedule(horizon), req.target_slack)
        stopping = {
            "target_slack": req.target_slack,
            "target": "the subsampling term of the best bits_per_token row (smallest bound) after each round",
            "rounds": [{"draws": t, "slack": x} for t, x in zip(round_schedule(horizon), slacks, strict=False)],
            "used": used,
            "horizon": horizon,
            "stopped": "target met" if slacks[-1] <= req.target_slack else "--samples reached",
            "validity": "betting UCB with bets tuned for the horizon --samples, fixed in advance: valid at any "
            "stopping round (Ville's inequality); the delta split was fixed with s = --samples "
            "(tokenbounds.stats.stopping)",
        }
    scored = ScoredUnits(
        UnitSums.concat([p.sums for p in parts]),
        input_tokens=sum(p.input_tokens for p in parts),
        seconds=sum(p.seconds for p in parts),
        processes=parts[0].processes,
        resumed_batches=sum(p.resumed_batches for p in parts),
    )
    return scored, outcome["rows"], outcome["distinct"], stopping


def _rows(
    req,
    hypothesis,
    m: int,
    statistics: StatisticSet,
    split: ReportSplit,
    lambdas,
    sums: UnitSums,
    draws,
    horizon: int | None = None,
    exact: np.ndarray | None = None,
):
    """Every statistic's report row (each alpha, then each k) and, when sampled, the per-unit values behind them.

    sums: sampled (draws given), one row per draw in sampling order (the unit it drew); exhaustive, the corpus
    totals. A draw's value is its unit's mean loss; the exhaustive empirical risk is sum of losses / m, or `exact[j]`
    where given (the mean of the unit means, --unit document). horizon: the draws are a stopping time <= horizon
    (--target-slack), so the UCBs take their anytime-valid form.
    """
    sampled = draws is not None
    results, units_loss, units_sq = [], [], []
    for j, (a, width) in enumerate(statistics.ranges()):
        loss_in, sq_in = sums.unit_means(j)
        if sampled:
            units_loss.append(loss_in)
            units_sq.append(sq_in)
        else:
            loss_in = float(loss_in[0] if exact is None else exact[j])
            sq_in = None if sq_in is None else float(sq_in[0])
        b = statistic_bound(
            req.method,
            loss_in,
            sq_in,
            a=a,
            delta_range=width,
            complexity_nats=hypothesis.prior.complexity_nats,
            m=m,
            delta1=split.delta1,
            delta2=split.delta2 if sampled else None,
            ucb=req.subsample_ucb if sampled else None,
            lambdas=lambdas,
            horizon=horizon,
        )
        alpha_or_k = j < len(statistics.alphas)
        statistic, param = (
            ("bits_per_token", {"alpha": statistics.alphas[j]})
            if alpha_or_k
            else ("top_k_error", {"k": statistics.ks[j - len(statistics.alphas)]})
        )
        spread = {"unit_std": float(np.std(loss_in)) if sampled else None, "token_std": sums.target_std(j)}
        results.append({"statistic": statistic, **param, "loss_min": a, "loss_range": width, **b.row(), **spread})
    if not sampled:
        return results, None
    units = {"statistics": np.array(statistics.labels()), "unit_loss": np.stack(units_loss), "draws": draws}
    if statistics.centred:
        units["unit_sq"] = np.stack(units_sq)
    return results, units


def _report(req, hypothesis: Hypothesis, corpus: Corpus, plan, scored, split, lambdas, results, distinct, stopping):
    sampled, prior, vocab = plan.draws is not None, hypothesis.prior, hypothesis.model.vocab_size
    best = min((r for r in results if r["statistic"] == "bits_per_token"), key=lambda r: r["bound"])
    n_scored, seconds = scored.scored_targets, scored.seconds
    return {
        "method": req.method,
        "mode": req.mode,
        "unit": req.unit,
        "bounded_quantity": BOUNDED_QUANTITY[req.unit],
        "delta": req.delta,
        "n_tokens": corpus.n_tokens,
        "samples": None if not sampled else stopping["used"] if stopping else len(plan.draws),
        "distinct_units": distinct,
        "target_slack": stopping,
        "vocab_size": vocab,
        "log2_vocab": math.log2(vocab),
        "message_bits": prior.message_bits,
        "extra_bits": prior.extra_bits,
        "complexity_nats": prior.complexity_nats,
        "context": plan.rule.context,
        "stride": plan.rule.stride,
        "context_rule": plan.rule.describe(),
        "subsample_ucb": req.subsample_ucb if sampled else None,
        "lambdas": lambdas.tolist() if req.method == "eb" else None,
        "centring": CENTRING if req.method == "eb" else None,  # how the eb centring c_i was computed
        "seed": req.seed,
        "random_stream": describe(req.seed, BOUND_UNITS),
        "delta_split": split.as_dict(),
        "prior": prior.as_dict(),
        "hypothesis": hypothesis.describe(),
        "data": {
            "path": str(req.data),
            "shards": len(corpus.shards),
            "n_tokens": corpus.n_tokens,
            "eot": corpus.eot,
            "content_sha256": corpus.content_sha256(),  # the tokens' identity, whatever the path
            "verification": corpus.verification(every_token_read=not sampled),
        },
        "config": {k: v for k, v in asdict(req).items() if k not in RUN_DIR_FLAGS},  # every flag (run dir: timing)
        "results": results,
        "best_bits_per_token": {"alpha": best["alpha"], "bound": best["bound"], "empirical": best["empirical"]},
        **scored.sums.unsmoothed_nll(),  # null, with a count, where the model gave a target probability 0
        "timing": {
            "score_seconds": seconds,
            "scored_targets": n_scored,
            "targets_per_second": n_scored / seconds if seconds > 0 else None,
            "input_tokens": scored.input_tokens,
            "input_tokens_per_second": scored.input_tokens / seconds if seconds > 0 else None,
            # how the run was carried out, never a number of the bound: torchrun's ranks, a run directory
            "processes": scored.processes,
            "run_dir": req.run_dir,
            "resumed_batches": scored.resumed_batches,
        },
    }


@dataclass
class WholeUnitPlan:
    """Which documents (sequences) to score, and how the draws map onto them (`_report` reads it like a UnitPlan)."""

    population: WholeUnits
    units: np.ndarray  # sampled: the distinct units drawn; exhaustive: every unit
    draws: np.ndarray | None  # per draw, in sampling order: index of its unit in `units`; None if exhaustive
    rule: ContextRule


def plan_whole_units(req: BoundRequest, corpus: Corpus, rng: np.random.Generator) -> WholeUnitPlan:
    """--unit document|sequence: find the n units, then draw s of them uniformly (or take every one)."""
    rule = req.context_rule()
    population = whole_units(req.unit, corpus, rule.context, progress=req.progress)
    if req.mode == "exhaustive":
        return WholeUnitPlan(population, np.arange(population.n), None, rule)
    units, draws = population.sample(req.samples, rng)
    return WholeUnitPlan(population, units, draws, rule)


def score_whole_units(
    hypothesis: Hypothesis, plan: WholeUnitPlan, statistics: StatisticSet, req, pad_id: int, world: World
):
    """(scored, exact): sampled, one row of sums per unit of plan.units and exact None; exhaustive, one row of
    totals and `exact`, per statistic the mean over all n units of the unit means.

    Units are scored a chunk of windows at a time, each unit's windows merged into its row, so memory stays
    bounded by the chunk (exhaustive) or by the distinct units drawn (sampled).
    """
    population, exhaustive = plan.population, plan.draws is None
    n_targets = population.corpus.n_tokens if exhaustive else sum(population.n_targets(j) for j in plan.units.tolist())
    bar = tqdm(
        total=n_targets, unit="tok", desc="scoring", disable=not (req.progress and world.leader), dynamic_ncols=True
    )
    parts, totals, mean_sum, input_tokens, seconds = [], None, np.zeros(statistics.size), 0, 0.0
    for chunk in population.chunks(plan.units, WINDOWS_PER_CALL):
        windows = (w for j in chunk.tolist() for w in population.windows(j))
        scored = score_plan(
            hypothesis.model,
            windows,
            statistics,
            exhaustive=False,
            max_tokens=req.batch_tokens,
            pad_id=pad_id,
            progress=False,
            group_sizes=np.array([population.n_windows(j) for j in chunk.tolist()]),
            world=world,
        )
        sums = scored.sums
        if exhaustive:
            mean_sum += (sums.loss / sums.n_targets[:, None]).sum(axis=0)
            totals = sums.total() if totals is None else totals + sums.total()
        else:
            parts.append(sums)
        input_tokens += scored.input_tokens
        seconds += scored.seconds
        bar.update(scored.scored_targets)
    bar.close()
    if exhaustive:
        return ScoredUnits(totals, input_tokens, seconds, world.size), mean_sum / population.n
    return ScoredUnits(UnitSums.concat(parts), input_tokens, seconds, world.size), None


def _whole_unit_bound(req: BoundRequest, corpus: Corpus, hypothesis: Hypothesis, world: World):
    """The IID bound over documents (sequences): lotfi's formula with m = n units (tokenbounds.data.documents)."""
    plan = plan_whole_units(req, corpus, stream(req.seed, BOUND_UNITS))
    statistics = StatisticSet(tuple(req.alphas), tuple(req.ks), hypothesis.model.vocab_size, centred=False)
    scored, exact = score_whole_units(hypothesis, plan, statistics, req, corpus.eot, world)
    n = plan.population.n
    if plan.draws is None and scored.scored_targets != corpus.n_tokens:
        raise RuntimeError(f"scoring every {req.unit} covered {scored.scored_targets} of {corpus.n_tokens} tokens")
    split = report_delta_split(
        req.delta,
        statistics.size,
        complexity_nats=hypothesis.prior.complexity_nats,
        m=n,
        s=None if plan.draws is None else len(plan.draws),
        data_choice_bits=hypothesis.prior.data_choice_bits,
    )
    lambdas = None  # lotfi has no lambda grid
    sampled = plan.draws is not None
    sums = scored.sums.take(plan.draws) if sampled else scored.sums
    results, units = _rows(req, hypothesis, n, statistics, split, lambdas, sums, plan.draws, exact=exact)
    distinct = len(plan.units) if sampled else None
    report = _report(req, hypothesis, corpus, plan, scored, split, lambdas, results, distinct, None)
    report["mode"] = "exhaustive" if plan.draws is None else "sampled"
    report["n_units"] = n
    report["units"] = plan.population.describe()
    report["data"]["sources"] = corpus.meta.get("sources")  # e.g. the embedded plays split into scenes
    check_finite(report)
    return report, units
