"""Coverage of `--target-slack`: the subsampling UCB at a data-dependent stopping round, with the shipped functions.

Each trial draws N units with replacement from a fixed finite population of unit values whose mean R_hat is known
(as the pipeline draws units from a corpus), looks at the first t draws at every round of
`stats.stopping.round_schedule(N, first, growth)`, and computes the statistic's subsampling UCB there with the
shipped `stats.bound.statistic_bound` (lotfi, sampled: empirical + subsampling term; the martingale term does not
depend on the draws). Two stopping rules:

- the pipeline's: `stats.stopping.sample_until` with the target slack EPS (stop at the first round whose subsampling
  term is <= EPS). A miss: the UCB at the stopping round is < R_hat.
- the adversary's: stop at the first round whose UCB is below R_hat, if any. A miss: some round's UCB is < R_hat.
  Every stopping rule misses at most this often, so an anytime-valid UCB must keep this rate <= delta too.

Methods: "betting/anytime" (shipped: bets tuned for the horizon N, `horizon=N`), and two broken variants, each the
shipped function fed other inputs: "betting/re-tuned" (bets tuned for each round's t: a fixed-n, variance-adaptive
interval re-checked after every round) and "maurer-pontil/re-checked" (the Maurer-Pontil fixed-n interval
re-checked after every round). The populations are skewed (most units cheap, a few costly), where a
variance-adaptive interval is narrowest exactly when the draws happen to miss the costly units.
"""

from dataclasses import dataclass

import numpy as np

from tokenbounds.coverage.table import binomial_allowance
from tokenbounds.stats.bound import statistic_bound
from tokenbounds.stats.stopping import round_schedule, sample_until

METHODS = {"betting/anytime": ("betting", True)}
BROKEN_METHODS = {"betting/re-tuned": ("betting", False), "maurer-pontil/re-checked": ("maurer-pontil", False)}


@dataclass(frozen=True)
class StoppingSetting:
    name: str
    population: str  # "bernoulli:P" (units cost 1 with probability P, else 0) or "beta:A,B"
    horizon: int  # N
    first: int
    growth: float
    delta: float
    target_slack: float  # EPS, as a fraction of the unit range [0, 1]
    population_size: int = 20_000
    seed: int = 0


# 21 and 24 rounds: far more looks than the pipeline's doubling, to give re-checking every chance to fail.
SETTINGS = (
    StoppingSetting("bernoulli-0.2", "bernoulli:0.2", horizon=512, first=8, growth=1.25, delta=0.1, target_slack=0.04),
    StoppingSetting("beta-0.5,4", "beta:0.5,4", horizon=2048, first=16, growth=1.25, delta=0.1, target_slack=0.03),
)


def population(s: StoppingSetting) -> np.ndarray:
    rng = np.random.default_rng([s.seed, 1])
    kind, params = s.population.split(":")
    if kind == "bernoulli":
        return (rng.random(s.population_size) < float(params)).astype(np.float64)
    a, b = (float(v) for v in params.split(","))
    return rng.beta(a, b, s.population_size)


def subsampling_ucb(draws: np.ndarray, s: StoppingSetting, ucb: str, anytime: bool) -> np.ndarray:
    """The shipped bound's UCB of the draws' mean (trials, t) -> (trials,): empirical + subsampling term."""
    b = statistic_bound(
        "lotfi",
        draws,
        a=0.0,
        delta_range=1.0,
        complexity_nats=0.0,
        m=10**9,
        delta1=s.delta,
        delta2=s.delta,
        ucb=ucb,
        horizon=s.horizon if anytime else None,
    )
    return b.empirical + b.subsampling_term


def run_stopping_setting(s: StoppingSetting, trials: int, methods=None) -> list[dict]:
    """Miss rates of each method under the pipeline's stopping rule and the adversary's, over seeded trials."""
    values = population(s)
    r_hat = float(values.mean())
    rng = np.random.default_rng([s.seed, 2])
    draws = values[rng.integers(0, len(values), size=(trials, s.horizon))]
    schedule = round_schedule(s.horizon, s.first, s.growth)
    out = []
    for name, (ucb, anytime) in (methods or {**METHODS, **BROKEN_METHODS}).items():
        ucbs = np.stack([subsampling_ucb(draws[:, :t], s, ucb, anytime) for t in schedule], axis=1)  # (trials, R)
        slacks = ucbs - np.stack([draws[:, :t].mean(axis=1) for t in schedule], axis=1)
        index = {t: i for i, t in enumerate(schedule)}
        stopped = []
        for trial_slacks, trial_ucbs in zip(slacks, ucbs, strict=True):  # the pipeline's rule, its very function
            used, _ = sample_until(lambda t, row=trial_slacks, at=index: row[at[t]], schedule, s.target_slack)
            stopped.append(trial_ucbs[index[used]])
        out.append(
            {
                "setting": s.name,
                "method": name,
                "broken": name in BROKEN_METHODS,
                "delta": s.delta,
                "trials": trials,
                "rounds": len(schedule),
                "miss_rate_target_slack": float(np.mean(np.array(stopped) < r_hat)),
                "miss_rate_adversary": float(np.mean((ucbs < r_hat).any(axis=1))),
                "allowance": binomial_allowance(s.delta, trials),
            }
        )
    return out
