"""Coverage simulations of the token bounds on sources whose conditional probabilities are known exactly.

A random k-th order Markov chain over V tokens (each row a Dirichlet draw, optionally on a random support of
a few tokens) generates a corpus x_1..x_m. A fixed, mis-specified predictor (the true rows tempered,
perturbed with log-normal noise and renormalised, then smoothed with weight alpha) plays the hypothesis h;
its context rule is "the previous k tokens" (the first k positions see a history of token 0). Because the
chain is known, the bounded quantity is computed exactly for every simulated corpus:

    R = (1/m) sum_i E[l_i | x_<i] = (1/m) sum_i sum_y P(y | s_i) l_h(y | s_i),

with s_i the chain state before x_i. R is a random variable (it depends on the path); a bound "holds" on a
trial when R <= bound. Each method's bound is computed from the same corpus as a user would (sampled units,
delta split, union over the alpha grid), and the violation rate over many seeded trials must stay <= delta.
For a grid of several alphas a trial counts as violated when any alpha's bound fails (the guarantee is
simultaneous). Top-k error uses l_i = 1[x_i not among the predictor's k most probable tokens].

Every bound here is computed by `tokenbounds.stats.bound.statistic_bound` with the delta split of
`tokenbounds.stats.bound.report_delta_split`: the very functions `bound` calls, so the simulation tests the shipped
arithmetic (terms, UCBs, clipping at a + Delta, split), not a copy of it.

Methods ("bound/unit/ucb"):
  lotfi/exhaustive        R_hat + Delta sqrt((log 1/P + ln 1/delta1) / (2m))              (DESIGN §3.1)
  lotfi/token/hoeffding   the paper: mean of s sampled tokens + Hoeffding subsampling term
  lotfi/block/betting     block means and the betting UCB in place of Hoeffding
  eb/exhaustive, eb/token/<ucb>, eb/block/<ucb>, eb-topk/token/betting                       (DESIGN §3.2)
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

Settings with a purpose: memorise-V50 (an over-fitted predictor, its training positions drawn per trial from
tokenbounds.streams' training stream; valid only with the bound's own stream), tied-V50 (probabilities rounded to
a coarse grid, so most tokens tie; the shipped top-k rule counts ties against the model). For top-k, R is the
error of a real decoder that breaks ties towards low token ids; the shipped loss is >= it pointwise.

Delta bookkeeping, per method: delta is split equally over the |A| alphas (or the one top-k); exhaustive methods
give all of a statistic's share to the martingale term, sampled ones half to each term.

The "scale" reported for a method is the (1 - delta) quantile over trials of (R - estimate) / (bound -
estimate), estimate being the method's point estimate of R_hat (maximum over alphas): a valid bound at level
delta has scale <= 1, and scale = 0.4 says that an excess 0.4 times as large would still have held.
"""

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from tokenbounds.stats.bound import report_delta_split, statistic_bound
from tokenbounds.stats.eb import smoothed_entropy_bits
from tokenbounds.stats.smoothing import loss_range, smoothed_bits
from tokenbounds.stats.topk import pessimistic_rank, topk_error
from tokenbounds.streams import BOUND_UNITS, TRAIN_WINDOWS, stream


@dataclass(frozen=True)
class MarkovChain:
    """P(next token | previous `order` tokens); state index = sum_j x_{i-j} V^(j-1) over j = 1..order."""

    transition: np.ndarray  # (V**order, V), rows sum to 1
    order: int

    @property
    def vocab_size(self) -> int:
        return int(self.transition.shape[1])

    @property
    def n_states(self) -> int:
        return int(self.transition.shape[0])


def random_markov_chain(
    vocab_size: int, order: int, concentration: float, rng: np.random.Generator, support: int | None = None
) -> MarkovChain:
    """Rows ~ Dirichlet(concentration) over `support` random tokens of each row (all V when None)."""
    if vocab_size < 2 or order < 1:
        raise ValueError("need vocab_size >= 2 and order >= 1")
    n_states = vocab_size**order
    width = vocab_size if support is None else int(support)
    if not 1 <= width <= vocab_size:
        raise ValueError(f"support must lie in [1, V], got {support}")
    weights = rng.dirichlet(np.full(width, float(concentration)), size=n_states)
    transition = np.zeros((n_states, vocab_size))
    if width == vocab_size:
        transition[:] = weights
    else:
        cols = np.argsort(rng.random((n_states, vocab_size)), axis=1)[:, :width]
        np.put_along_axis(transition, cols, weights, axis=1)
    return MarkovChain(transition=transition, order=order)


def sample_paths(chain: MarkovChain, n_trials: int, length: int, rng: np.random.Generator):
    """(states, tokens), each (n_trials, length): the state before each token and the token drawn from it.

    Inverse-CDF sampling for all trials at once: the per-row CDFs are laid end to end (row s occupies
    (s, s + 1]) so one searchsorted finds the token for every trial.
    """
    vocab = chain.vocab_size
    cdf = np.cumsum(chain.transition, axis=1)
    cdf[:, -1] = 1.0
    stacked = (cdf + np.arange(chain.n_states)[:, None]).ravel()
    states = np.empty((n_trials, length), dtype=np.int64)
    tokens = np.empty((n_trials, length), dtype=np.int64)
    state = np.zeros(n_trials, dtype=np.int64)
    uniforms = rng.random((n_trials, length))
    for i in range(length):
        pos = np.searchsorted(stacked, state + uniforms[:, i], side="right")
        tok = np.minimum(pos - state * vocab, vocab - 1)  # guard against u at a row's rounding edge
        states[:, i] = state
        tokens[:, i] = tok
        state = (state * vocab + tok) % chain.n_states
    return states, tokens


def perturbed_predictor(chain: MarkovChain, rng: np.random.Generator, temperature: float, noise: float):
    """A fixed mis-specified model: q(y|s) ∝ (P(y|s) + 1e-6)^(1/temperature) * exp(noise * N(0, 1))."""
    logits = np.log(chain.transition + 1e-6) / temperature + noise * rng.standard_normal(chain.transition.shape)
    logits -= logits.max(axis=1, keepdims=True)
    q = np.exp(logits)
    return q / q.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class TokenTables:
    """Per-state quantities of one fixed predictor: the loss of every token, its expectation, the centring."""

    loss: np.ndarray  # (S, V): loss if token y follows state s
    expected_loss: np.ndarray  # (S,): E[l | s] under the true chain
    centring: np.ndarray  # (S,): c(s) >= a
    a: float
    delta_range: float


def loss_tables(chain: MarkovChain, model_probs: np.ndarray, alpha: float) -> TokenTables:
    """Smoothed bits-per-token loss, centred at the entropy of the smoothed prediction."""
    a, delta_range = loss_range(alpha, chain.vocab_size)
    with np.errstate(divide="ignore"):
        loss = smoothed_bits(np.log(model_probs), alpha, chain.vocab_size)
    return TokenTables(
        loss=loss,
        expected_loss=np.sum(chain.transition * loss, axis=1),
        centring=smoothed_entropy_bits(model_probs, alpha),
        a=a,
        delta_range=delta_range,
    )


def decoder_topk_error(model_probs: np.ndarray, k: int) -> np.ndarray:
    """(S, V): 1 where token y is not among the k tokens a real decoder returns (ties broken towards low ids)."""
    order = np.argsort(-model_probs, axis=1, kind="stable")[:, :k]
    err = np.ones_like(model_probs)
    np.put_along_axis(err, order, 0.0, axis=1)
    return err


def topk_tables(chain: MarkovChain, model_probs: np.ndarray, k: int, ties: str = "against") -> TokenTables:
    """Top-k error, centred at the model's probability mass outside its k most probable tokens.

    The loss is the shipped rule, `tokenbounds.stats.topk` (ties counted against the model: rank = #{v : q_v >=
    q_y} - 1), or with ties="as-hits" the broken "strictly greater" count. The bounded quantity R is the error of
    a real decoder (ties broken towards low token ids): the shipped loss is >= it pointwise, so a bound on the
    shipped loss's R bounds it; the broken count is <= it, and with tied probabilities far below it.
    """
    targets = np.broadcast_to(np.arange(model_probs.shape[1]), model_probs.shape)
    if ties == "against":
        rank = pessimistic_rank(
            np.broadcast_to(model_probs[:, None, :], (*model_probs.shape, model_probs.shape[1])), targets
        )
    elif ties == "as-hits":
        rank = np.sum(model_probs[:, None, :] > model_probs[:, :, None], axis=-1)
    else:
        raise ValueError(f"ties must be 'against' or 'as-hits', got {ties!r}")
    mass_in_top = np.sort(model_probs, axis=1)[:, ::-1][:, :k].sum(axis=1)
    return TokenTables(
        loss=topk_error(rank, k),
        expected_loss=np.sum(chain.transition * decoder_topk_error(model_probs, k), axis=1),
        centring=np.clip(1.0 - mass_in_top, 0.0, 1.0),
        a=0.0,
        delta_range=1.0,
    )


def tied_predictor(model_probs: np.ndarray, grid: float) -> np.ndarray:
    """Probabilities rounded down to multiples of `grid` and renormalised: many exactly tied values per row (all
    the tokens below one grid step tie at 0); a row with nothing left becomes uniform (all V tied)."""
    q = np.floor(model_probs / grid) * grid
    q[q.sum(axis=1) == 0] = 1.0
    return q / q.sum(axis=1, keepdims=True)


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
    centring = smoothed_entropy_bits(q, alpha)
    return loss, ((centring - loss) / width) ** 2, np.sum(chain.transition[st] * every, axis=-1)


def run_setting(
    setting: Setting, n_trials: int, seed: int = 0, methods=METHODS + BROKEN_METHODS, chunk: int = 200
) -> dict:
    """Violation rates of each method over n_trials seeded corpora; returns a JSON-ready dict."""
    s = setting
    methods = [meth for meth in methods if applicable(s, meth)]
    setup_rng = np.random.default_rng([s.seed, 12345])  # the source and the predictor: fixed per setting
    chain = random_markov_chain(s.vocab_size, s.order, s.concentration, setup_rng, support=s.support)
    model = perturbed_predictor(chain, setup_rng, s.temperature, s.noise)
    if s.tie_grid is not None:
        model = tied_predictor(model, s.tie_grid)
    tables = {("loss", alpha): loss_tables(chain, model, alpha) for alpha in s.alphas}
    for kind, ties in (("topk", "against"), ("topk-as-hits", "as-hits")):
        if any(_table_key(meth) == kind for meth in methods):
            tables[(kind, s.topk)] = topk_tables(chain, model, s.topk, ties=ties)
    tallies = {meth: _Tally() for meth in methods}
    rng = np.random.default_rng([seed, s.seed])
    starts, lengths = block_layout(s)
    n_blocks = len(starts)
    done = 0
    while done < n_trials:
        c = min(chunk, n_trials - done)
        states, tokens = sample_paths(chain, c, s.m, rng)
        token_idx = rng.integers(0, s.m, size=(c, s.samples))  # uniform positions, with replacement
        if np.all(lengths == s.block):  # equal-length blocks: uniform
            block_idx = rng.integers(0, n_blocks, size=(c, s.samples))
        else:  # in proportion to length, so the mean of the drawn block means estimates the token mean
            block_idx = rng.choice(n_blocks, size=(c, s.samples), p=lengths / s.m)
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
            units_loss = {
                "token": token_loss[rows, token_idx],
                "block": (np.add.reduceat(token_loss, starts, axis=1) / lengths)[rows, block_idx],
            }
            units_sq = {
                "token": token_sq[rows, token_idx],
                "block": (np.add.reduceat(token_sq, starts, axis=1) / lengths)[rows, block_idx],
            }
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


def binomial_allowance(delta: float, trials: int) -> float:
    """Largest violation rate a valid bound shows by chance at 3 binomial standard deviations."""
    return delta + 3.0 * math.sqrt(delta * (1.0 - delta) / trials)


def format_table(results: list[dict]) -> str:
    """A readable table: one row per setting and method."""
    head = f"{'setting':<16} {'method':<34} {'delta':>5} {'viol.':>7} {'rate':>7} {'allowed':>7} "
    head += f"{'scale':>6} {'excess':>8}  verdict"
    lines = [head, "-" * len(head)]
    for res in results:
        s = res["setting"]
        for meth, r in res["methods"].items():
            ok = r["violation_rate"] <= r["allowed"]
            verdict = ("caught" if not ok else "not caught") if r["broken"] else ("ok" if ok else "VIOLATED")
            lines.append(
                f"{s['name']:<16} {meth:<34} {s['delta']:>5.2f} {r['violations']:>7d} "
                f"{r['violation_rate']:>7.4f} {r['allowed']:>7.3f} {r['scale']:>6.2f} "
                f"{r['mean_excess']:>8.4f}  {verdict}"
            )
    return "\n".join(lines)
