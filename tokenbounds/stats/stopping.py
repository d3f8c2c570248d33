"""Sampling in rounds until the bound is tight enough (`bound --target-slack EPS`), with every guarantee kept.

The horizon N (= --samples) is fixed before any draw, and so are the rounds: after round k the first

    t_k = min(N, FIRST_ROUND * 2^(k-1))        draws

are scored, every statistic's bound is computed from them with the anytime-valid UCB (betting, bets tuned for the
horizon N: tokenbounds.stats.subsample), and the run stops at the first round where the target's subsampling term
is <= EPS, or at t = N.

Why stopping on the data keeps every reported number valid. Fix a statistic (and, for eb, one candidate of its
union). Its UCB from the first t draws is inf{m : max_{i<=t} K_i(m) >= 1/delta2}, with ONE capital process K whose
bets are fixed in advance; by Ville's inequality the event {max_{i<=N} K_i(mu) < 1/delta2} has probability
>= 1 - delta2, and on it the UCB holds at every t <= N simultaneously, hence at the stopping round tau, whatever
rule chose tau (tau may look at every statistic's draws). The delta split is computed with s = N before any draw,
so it does not depend on tau, and the martingale term does not depend on the draws at all: the union bound over
statistics and terms is the one of a fixed-size run. What would break it: a fixed-n interval (hoeffding,
maurer-pontil) re-checked after every round, or bets re-tuned for each t (a union over the t's never paid for).
The coverage simulation (tokenbounds.coverage.stopping) runs `sample_until` with the shipped statistic_bound and
catches the maurer-pontil variant.
"""

from collections.abc import Callable

FIRST_ROUND = 64  # draws in the first round
GROWTH = 2.0  # each later round multiplies the draws so far by this (the simulation also looks more often)


def round_schedule(horizon: int, first: int = FIRST_ROUND, growth: float = GROWTH) -> list[int]:
    """The draws scored by the end of each round: first, then x growth (at least one more) each round, ending at
    the horizon."""
    if horizon < 1 or first < 1 or not growth > 1:
        raise ValueError(f"need a horizon and a first round >= 1 and growth > 1, got {horizon}, {first}, {growth}")
    rounds, t = [], first
    while t < horizon:
        rounds.append(t)
        t = max(t + 1, int(t * growth))
    return [*rounds, horizon]


def sample_until(slack_after: Callable[[int], float], schedule: list[int], target: float) -> tuple[int, list[float]]:
    """(draws used, the target's slack after each round looked at): stop at the first round with slack <= target.

    `slack_after(t)` scores the first t draws (if not yet scored) and returns the target statistic's subsampling
    term; it is called on the rounds of `schedule` in order until one meets the target or the schedule ends.
    """
    if not target > 0:
        raise ValueError(f"the target slack must be > 0, got {target}")
    slacks = []
    for t in schedule:
        slacks.append(float(slack_after(t)))
        if slacks[-1] <= target:
            return t, slacks
    return schedule[-1], slacks
