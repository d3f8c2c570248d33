"""The coverage harness: every bound method run on many seeded simulated corpora, its violation rate counted.

For each setting (`settings.py`) and each seeded trial, a corpus is drawn from the setting's Markov chain
(`sources.py`), R is computed exactly, and each method's bound is computed from the same corpus as a user would
(sampled units, delta split, union over the alpha grid). A bound "holds" on a trial when R <= bound; for a grid of
several alphas a trial counts as violated when any alpha's bound fails (the guarantee is simultaneous). The
violation rate over the trials must stay within `table.binomial_allowance` of delta.

Every bound here is computed by `tokenbounds.stats.bound.statistic_bound` with the delta split of
`tokenbounds.stats.bound.report_delta_split`: the very functions `bound` calls, so the simulation tests the shipped
arithmetic (terms, UCBs, clipping at a + Delta, split), not a copy of it.

Methods ("bound/unit/ucb"):
  lotfi/exhaustive        R_hat + Delta sqrt((log 1/P + ln 1/delta1) / (2m))  (docs/statistics.md, "The paper's bound")
  lotfi/token/hoeffding   the paper: mean of s sampled tokens + Hoeffding subsampling term
  lotfi/block/betting     block means and the betting UCB in place of Hoeffding
  eb/exhaustive, eb/token/<ucb>, eb/block/<ucb>, eb-topk/token/betting
                          (docs/statistics.md, "The `eb` bound")
Deliberately broken variants, which the same harness must catch. Each is the shipped function fed other inputs:
  lotfi/exhaustive/half-complexity   the martingale term halved (m passed as 4m)
  eb/exhaustive/half-complexity      L / (lambda m) halved (m passed as 2m; shown for information: its slack is
                                     too large for these settings to catch it)
  eb/exhaustive/no-variance-term     v taken as 0 (unit_sq of zeros: only L/(lambda m) left)
  eb/token/plug-in                   the subsample means used as if they were the exact R_hat and v (the
                                     exhaustive branch fed subsample means)
  eb/token/betting/same-stream       memorise-V50: the units drawn from the training stream, i.e. the sample
                                     re-draws the positions the predictor memorised
  eb-topk/token/betting/ties-as-hits the top-k error counting only strictly higher tokens ahead of the target,
                                     so a tie is a hit (caught in tied-V50)

Delta bookkeeping, per method: delta is split equally over the |A| alphas (or the one top-k); exhaustive methods
give all of a statistic's share to the martingale term, sampled ones divide it between the two terms as
`report_delta_split` chooses (from C, m, s and the union sizes, before any token is drawn), as the pipeline does.

The "scale" reported for a method is the (1 - delta) quantile over trials of (R - estimate) / (bound -
estimate), estimate being the method's point estimate of R_hat (maximum over alphas): a valid bound at level
delta has scale <= 1, and scale = 0.4 says that an excess 0.4 times as large would still have held.
"""

from dataclasses import asdict, dataclass, field

import numpy as np

from tokenbounds.coverage.settings import Setting, block_layout
from tokenbounds.coverage.sources import (
    MarkovChain,
    loss_tables,
    perturbed_predictor,
    random_markov_chain,
    sample_paths,
    tied_predictor,
    topk_tables,
)
from tokenbounds.coverage.table import binomial_allowance
from tokenbounds.models.scorer import centrings
from tokenbounds.stats.bound import report_delta_split, statistic_bound
from tokenbounds.stats.smoothing import loss_range, smoothed_bits
from tokenbounds.streams import BOUND_UNITS, TRAIN_WINDOWS, stream

METHODS = (
    "lotfi/exhaustive",
    "lotfi/token/hoeffding",
    "lotfi/block/betting",
    "eb/exhaustive",
    "eb/token/hoeffding",
    "eb/token/maurer-pontil",
    "eb/token/betting",
    "eb/block/betting",
    "eb-topk/token/betting",
)
BROKEN_METHODS = (
    "lotfi/exhaustive/half-complexity",
    "eb/exhaustive/half-complexity",
    "eb/exhaustive/no-variance-term",
    "eb/token/plug-in",
    "eb/token/betting/same-stream",
    "eb-topk/token/betting/ties-as-hits",
)


def applicable(setting: Setting, method: str) -> bool:
    """same-stream needs a memorising predictor; top-k is not simulated for one (its top k moves with x_i)."""
    if method.endswith("/same-stream"):
        return setting.memorised > 0
    if method.startswith("eb-topk"):
        return setting.memorised == 0
    return True


def _table_key(method: str) -> str:
    if method.startswith("eb-topk"):
        return "topk-as-hits" if method.endswith("/ties-as-hits") else "topk"
    return "loss"


@dataclass
class _Tally:
    violations: int = 0
    trials: int = 0
    ratios: list = field(default_factory=list)  # per trial: max over alphas of (R - est) / (bound - est)
    excess: list = field(default_factory=list)  # per trial: mean over alphas of bound - est


def _method_bound(method, units_loss, units_sq, token_loss, token_sq, t, s, split):
    """(bound, point estimate) for one method and one statistic, each of shape (trials,).

    Every bound is `statistic_bound`, the pipeline's function; a broken variant only changes its inputs:
    half-complexity = 4 m (lotfi: Delta sqrt(x / (2 * 4m)) is half the term) or 2 m (eb: L / (lambda 2m));
    no-variance-term = unit means of ((c - l)/Delta)^2 of zero; plug-in = the exhaustive branch fed the subsample
    means; same-stream = units drawn from the training stream; ties-as-hits = the table of the broken top-k count.
    """
    parts = method.split("/")
    family, unit = parts[0].replace("eb-topk", "eb"), parts[1]
    variant = parts[2] if unit == "exhaustive" and len(parts) > 2 else (parts[3] if len(parts) > 3 else None)
    common = {
        "a": t.a,
        "delta_range": t.delta_range,
        "complexity_nats": s.complexity_nats,
        "m": s.m,
        "delta1": split.delta1,
        "lambdas": s.lambdas,
    }
    if variant == "half-complexity":
        common["m"] = 4 * s.m if family == "lotfi" else 2 * s.m
    if unit == "exhaustive":
        mean_loss, mean_sq = token_loss.mean(axis=1), token_sq.mean(axis=1)
        if variant == "no-variance-term":
            mean_sq = np.zeros_like(mean_sq)
        return statistic_bound(family, mean_loss, mean_sq, **common).bound, mean_loss
    key = unit + ("/same-stream" if variant == "same-stream" else "")
    loss, sq = units_loss[key], units_sq[key]
    if parts[2] == "plug-in":  # broken on purpose: the subsample means taken as the exact R_hat and v
        return statistic_bound(family, loss.mean(axis=1), sq.mean(axis=1), **common).bound, loss.mean(axis=1)
    b = statistic_bound(family, loss, sq, delta2=split.delta2, ucb=parts[2], **common)
    return b.bound, b.empirical


def memorised_positions(s: Setting, trial_seeds) -> np.ndarray:
    """(trials, memorised): the training positions of each trial, from its training stream."""
    return np.stack([stream(int(seed), TRAIN_WINDOWS).integers(0, s.m, size=s.memorised) for seed in trial_seeds])


def token_draws(s: Setting, trial_seeds, purpose: str) -> np.ndarray:
    """(trials, samples): the bound's uniform token positions of each trial, from the stream of `purpose`."""
    return np.stack([stream(int(seed), purpose).integers(0, s.m, size=s.samples) for seed in trial_seeds])


def memorised_values(chain: MarkovChain, model, s: Setting, alpha, states, tokens, positions):
    """At the memorised positions, per trial: (loss, ((c - l)/Delta)^2, E[l | x_<i]), each of shape (trials, n).

    There h predicts q' = (1 - w) q(. | s_i) + w 1[y = x_i]: a fixed function of (position, context) once its bit
    per position is fixed, so E[l_i | x_<i] = sum_y P(y | s_i) l_q'(y) and the centring is the entropy of q'.
    """
    rows = np.arange(states.shape[0])[:, None]
    st, tok = states[rows, positions], tokens[rows, positions]
    q = (1.0 - s.memorise_weight) * model[st]
    hit = np.take_along_axis(q, tok[..., None], -1) + s.memorise_weight
    np.put_along_axis(q, tok[..., None], hit, axis=-1)
    _, width = loss_range(alpha, s.vocab_size)
    every = smoothed_bits(np.log(q), alpha, s.vocab_size)  # (trials, n, V): the loss of each possible next token
    loss = np.take_along_axis(every, tok[..., None], -1)[..., 0]
    centring = centrings(q, alphas=[alpha])[0][..., 0]  # the scorer's own
    return loss, ((centring - loss) / width) ** 2, np.sum(chain.transition[st] * every, axis=-1)


def setting_source(s: Setting) -> tuple[MarkovChain, np.ndarray]:
    """The setting's chain and predictor: fixed per setting (seeded by s.seed alone), the same in every trial."""
    setup_rng = np.random.default_rng([s.seed, 12345])
    chain = random_markov_chain(s.vocab_size, s.order, s.concentration, setup_rng, support=s.support)
    model = perturbed_predictor(chain, setup_rng, s.temperature, s.noise)
    if s.tie_grid is not None:
        model = tied_predictor(model, s.tie_grid)
    return chain, model


def draw_units(s: Setting, rng: np.random.Generator, n_trials: int, starts, lengths):
    """(token positions, block indices), each (n_trials, samples), drawn with replacement.

    Tokens are uniform; blocks are uniform when all have length B, otherwise drawn in proportion to their length,
    so that the mean of the drawn block means estimates the token mean (the pipeline's block mode).
    """
    token_idx = rng.integers(0, s.m, size=(n_trials, s.samples))
    if np.all(lengths == s.block):
        block_idx = rng.integers(0, len(starts), size=(n_trials, s.samples))
    else:
        block_idx = rng.choice(len(starts), size=(n_trials, s.samples), p=lengths / s.m)
    return token_idx, block_idx


def unit_values(per_token: np.ndarray, token_idx, block_idx, starts, lengths) -> dict:
    """The sampled units' values of a per-token array (trials, m): {"token": the drawn tokens' values, "block": the
    drawn blocks' means}, each (trials, samples)."""
    rows = np.arange(per_token.shape[0])[:, None]
    block_means = np.add.reduceat(per_token, starts, axis=1) / lengths
    return {"token": per_token[rows, token_idx], "block": block_means[rows, block_idx]}


def run_setting(
    setting: Setting, n_trials: int, seed: int = 0, methods=METHODS + BROKEN_METHODS, chunk: int = 200
) -> dict:
    """Violation rates of each method over n_trials seeded corpora; returns a JSON-ready dict."""
    s = setting
    methods = [meth for meth in methods if applicable(s, meth)]
    chain, model = setting_source(s)
    tables = {("loss", alpha): loss_tables(chain, model, alpha) for alpha in s.alphas}
    for kind, ties in (("topk", "against"), ("topk-as-hits", "as-hits")):
        if any(_table_key(meth) == kind for meth in methods):
            tables[(kind, s.topk)] = topk_tables(chain, model, s.topk, ties=ties)
    tallies = {meth: _Tally() for meth in methods}
    rng = np.random.default_rng([seed, s.seed])
    starts, lengths = block_layout(s)
    done = 0
    while done < n_trials:
        c = min(chunk, n_trials - done)
        states, tokens = sample_paths(chain, c, s.m, rng)
        token_idx, block_idx = draw_units(s, rng, c, starts, lengths)
        if s.memorised:
            trial_seeds = seed * 10**7 + done + np.arange(c)
            memorised = memorised_positions(s, trial_seeds)
            token_idx = token_draws(s, trial_seeds, BOUND_UNITS)  # the bound's own stream: independent of training
            same_stream_idx = token_draws(s, trial_seeds, TRAIN_WINDOWS)  # broken: re-draws the training positions
        per_method = {meth: ([], [], []) for meth in methods}
        rows = np.arange(c)[:, None]
        for (kind, alpha), t in tables.items():
            token_loss = t.loss[states, tokens]
            expected = t.expected_loss[states]
            token_sq = ((t.centring[states] - token_loss) / t.delta_range) ** 2
            if s.memorised:
                mem_loss, mem_sq, mem_expected = memorised_values(chain, model, s, alpha, states, tokens, memorised)
                token_loss[rows, memorised], token_sq[rows, memorised] = mem_loss, mem_sq
                expected[rows, memorised] = mem_expected
            risk = expected.mean(axis=1)  # R, exactly
            units_loss = unit_values(token_loss, token_idx, block_idx, starts, lengths)
            units_sq = unit_values(token_sq, token_idx, block_idx, starts, lengths)
            if s.memorised:
                units_loss["token/same-stream"] = token_loss[rows, same_stream_idx]
                units_sq["token/same-stream"] = token_sq[rows, same_stream_idx]
            n_stats = len(s.alphas) if kind == "loss" else 1
            for meth in methods:
                if _table_key(meth) != kind:
                    continue
                split = report_delta_split(
                    s.delta,
                    n_stats,
                    complexity_nats=s.complexity_nats,
                    m=s.m,
                    s=None if meth.split("/")[1] == "exhaustive" else s.samples,
                    n_points=len(s.lambdas) + 1 if meth.startswith("eb") else 1,
                )
                bound, est = _method_bound(meth, units_loss, units_sq, token_loss, token_sq, t, s, split)
                with np.errstate(divide="ignore", invalid="ignore"):
                    per_method[meth][0].append((risk - est) / (bound - est))
                per_method[meth][1].append(bound - est)
                per_method[meth][2].append(risk > bound)
        for meth, (ratios, excess, violated) in per_method.items():
            worst = np.max(np.stack(ratios), axis=0)
            tally = tallies[meth]
            tally.violations += int(np.sum(np.any(np.stack(violated), axis=0)))  # any alpha fails: violated
            tally.trials += c
            tally.ratios.append(worst)
            tally.excess.append(np.mean(np.stack(excess), axis=0))
        done += c
    out = {"setting": asdict(s), "trials": n_trials, "seed": seed, "methods": {}}
    for meth, tally in tallies.items():
        ratios = np.concatenate(tally.ratios)
        out["methods"][meth] = {
            "violations": tally.violations,
            "trials": tally.trials,
            "violation_rate": tally.violations / tally.trials,
            "allowed": binomial_allowance(s.delta, tally.trials),
            "scale": float(np.quantile(ratios, 1.0 - s.delta)),
            "mean_excess": float(np.mean(np.concatenate(tally.excess))),
            "broken": meth in BROKEN_METHODS,
        }
    return out
