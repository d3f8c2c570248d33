"""The settings of the coverage study: each a simulated source, a predictor and a bound configuration.

Most settings vary the regime (vocabulary, order, delta, the alpha grid, unequal blocks); two have a purpose:
memorise-V50 (an over-fitted predictor, its training positions drawn per trial from tokenbounds.streams' training
stream; valid only with the bound's own stream) and tied-V50 (probabilities rounded to a coarse grid, so most tokens
tie; the shipped top-k rule counts ties against the model). Adding a setting adds it to tests/test_coverage.py and
scripts/coverage_sim.py; the test's EXPECTED_CAUGHT says which broken variants it must catch.
"""

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Setting:
    """One simulated source, predictor and bound configuration (everything fixed before the trials)."""

    name: str
    vocab_size: int
    order: int
    concentration: float
    temperature: float
    noise: float
    alphas: tuple[float, ...]
    m: int
    samples: int  # s: units drawn (tokens in token mode, blocks in block mode)
    block: int  # B
    delta: float
    complexity_nats: float = 0.0  # log 1/P(h); 0 = a single hypothesis fixed in advance
    support: int | None = None
    topk: int = 5
    lambdas: tuple[float, ...] = field(default=tuple(np.geomspace(0.02, 0.9, 8).tolist()))
    seed: int = 0
    # Shard lengths (summing to m), or None for one shard with m a multiple of B. Blocks are aligned within each
    # shard, so a shard's last block may be shorter, and blocks are drawn in proportion to their length: the
    # pipeline's block mode on a real corpus.
    shards: tuple[int, ...] | None = None
    # Memorisation: the predictor is fitted on `memorised` training positions per corpus, drawn from the training
    # stream (tokenbounds.streams.TRAIN_WINDOWS) of the trial's seed: at each it moves weight `memorise_weight` onto
    # the token that occurred there. Needs support = 2 (one bit per memorised token: complexity_nats >= memorised
    # ln 2). Token units are then drawn from the bound's own stream (BOUND_UNITS); the broken variant
    # ".../same-stream" draws them from the training stream, i.e. re-draws the training positions.
    memorised: int = 0
    memorise_weight: float = 0.9
    tie_grid: float | None = None  # the predictor's probabilities rounded down to this grid (tied_predictor)

    def __post_init__(self):
        if self.memorised and (self.support != 2 or self.complexity_nats < self.memorised * math.log(2.0)):
            raise ValueError("memorisation needs support = 2 and complexity_nats >= memorised * ln 2")
        if self.shards is None and self.m % self.block:
            raise ValueError("m must be a multiple of the block size (or give the shard lengths)")
        if self.shards is not None and sum(self.shards) != self.m:
            raise ValueError("the shard lengths must add up to m")


def block_layout(s: Setting) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of every block: aligned within each shard, a shard's last block possibly shorter."""
    starts, lengths, offset = [], [], 0
    for n in s.shards or (s.m,):
        starts += range(offset, offset + n, s.block)
        lengths += [min(s.block, n - b) for b in range(0, n, s.block)]
        offset += n
    return np.array(starts), np.array(lengths)


SETTINGS = {
    # Two-point losses: the predictor bets (almost) everything on one of two equally likely tokens, so each
    # loss is a or a + Delta with probability ~1/2: the regime where Hoeffding-type bounds are nearly tight.
    "coin-V50": Setting(
        name="coin-V50",
        vocab_size=50,
        order=1,
        concentration=30.0,
        support=2,
        temperature=1e-3,
        noise=0.0,
        alphas=(1e-3,),
        topk=1,
        m=2000,
        samples=200,
        block=10,
        delta=0.05,
    ),
    # A second-order chain with full-support rows and a tempered, noisy predictor; few sampled units, so the
    # subsampling term matters (and forgetting it is caught).
    "markov2-V50": Setting(
        name="markov2-V50",
        vocab_size=50,
        order=2,
        concentration=0.1,
        temperature=1.3,
        noise=0.5,
        alphas=(0.01, 0.1),
        m=4000,
        samples=100,
        block=20,
        delta=0.1,
    ),
    # A larger vocabulary, sparse (Dirichlet 0.05) rows, an over-confident noisy predictor, a longer corpus.
    "markov1-V500": Setting(
        name="markov1-V500",
        vocab_size=500,
        order=1,
        concentration=0.05,
        temperature=0.8,
        noise=1.0,
        alphas=(1e-3, 0.05),
        m=10000,
        samples=200,
        block=50,
        delta=0.1,
    ),
    # A large delta: the bounds must still hold at 30% failure probability, with a 3-value alpha grid.
    "markov1-V200-d30": Setting(
        name="markov1-V200-d30",
        vocab_size=200,
        order=1,
        concentration=0.2,
        temperature=1.0,
        noise=0.7,
        alphas=(1e-3, 0.01, 0.1),
        m=2000,
        samples=200,
        block=10,
        delta=0.3,
    ),
    # Blocks of unequal length: four shards whose lengths are not multiples of B, so every shard ends in a short
    # block (37, 31, 58 and 34 tokens against 64), drawn in proportion to length; few units.
    "ragged-V100": Setting(
        name="ragged-V100",
        vocab_size=100,
        order=1,
        concentration=0.1,
        temperature=1.2,
        noise=0.6,
        alphas=(0.01, 0.1),
        m=4000,
        shards=(997, 1503, 250, 1250),
        samples=60,
        block=64,
        delta=0.1,
    ),
    # An over-fitted predictor: on 200 training positions per corpus (the trainer's stream) it puts 0.9 on the token
    # that occurred there (one bit each, so log 1/P(h) = 200 ln 2). The sample must come from the bound's own stream;
    # drawn from the training stream it re-draws the memorised positions and the estimate collapses.
    "memorise-V50": Setting(
        name="memorise-V50",
        vocab_size=50,
        order=1,
        concentration=30.0,
        support=2,
        temperature=1.0,
        noise=0.0,
        alphas=(0.01,),
        m=10000,
        samples=200,
        block=50,
        delta=0.1,
        memorised=200,
        complexity_nats=200 * math.log(2.0),
    ),
    # Tied probabilities: the predictor rounded down to multiples of 0.1, so most tokens of a row tie at 0 (and rows
    # with no value >= 0.1 are uniform). Top-5 with ties counted as hits calls a target among the ~45 tokens tied at
    # the bottom a hit; the shipped rule counts every tied token ahead of it.
    "tied-V50": Setting(
        name="tied-V50",
        vocab_size=50,
        order=1,
        concentration=0.1,
        temperature=1.0,
        noise=0.3,
        alphas=(0.01, 0.1),
        m=2000,
        samples=200,
        block=20,
        delta=0.1,
        tie_grid=0.1,
    ),
}
