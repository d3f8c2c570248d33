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

Methods ("bound/unit/ucb"):
  lotfi/exhaustive        R_hat + Delta sqrt((log 1/P + ln 1/delta1) / (2m))              (DESIGN §3.1)
  lotfi/token/hoeffding   the paper: mean of s sampled tokens + Hoeffding subsampling term
  lotfi/block/betting     block means and the betting UCB in place of Hoeffding
  eb/exhaustive, eb/token/<ucb>, eb/block/<ucb>, eb-topk/token/betting                       (DESIGN §3.2)
Deliberately broken variants, which the same harness must catch:
  lotfi/exhaustive/half-complexity   the martingale term halved
  eb/exhaustive/half-complexity      L / (lambda m) halved (shown for information: its slack is too large
                                     for these settings to catch it)
  eb/exhaustive/no-variance-term     v taken as 0 (only L/(lambda m) left)
  eb/token/plug-in                   the subsample means used as if they were the exact R_hat and v

Delta bookkeeping, per method: delta is split equally over the |A| alphas; exhaustive methods give all of a
statistic's share to the martingale term, sampled ones half to each term.

`lotfi_reference_bound` is a local reference of the paper's bound (the project's `lotfi.py` implements the
same formula; the tests cross-check the two when both are present).

The "scale" reported for a method is the (1 - delta) quantile over trials of (R - estimate) / (bound -
estimate), estimate being the method's point estimate of R_hat (maximum over alphas): a valid bound at level
delta has scale <= 1, and scale = 0.4 says that an excess 0.4 times as large would still have held.
"""

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from tokenbounds.stats.eb import eb_bounds_batch, psi, smoothed_entropy_bits
from tokenbounds.stats.smoothing import loss_range, smoothed_bits
from tokenbounds.stats.subsample import get_ucb


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


def topk_tables(chain: MarkovChain, model_probs: np.ndarray, k: int) -> TokenTables:
    """Top-k error, centred at the model's probability mass outside its top k."""
    top = np.argsort(-model_probs, axis=1)[:, :k]
    err = np.ones_like(model_probs)
    np.put_along_axis(err, top, 0.0, axis=1)
    mass_in_top = np.take_along_axis(model_probs, top, axis=1).sum(axis=1)
    return TokenTables(
        loss=err,
        expected_loss=np.sum(chain.transition * err, axis=1),
        centring=np.clip(1.0 - mass_in_top, 0.0, 1.0),
        a=0.0,
        delta_range=1.0,
    )


def lotfi_reference_bound(
    units: np.ndarray | None,
    exact_mean: np.ndarray | None,
    *,
    a: float,
    delta_range: float,
    complexity_nats: float,
    m: int,
    delta1: float,
    delta2: float = 0.0,
    ucb: str = "hoeffding",
    complexity_scale: float = 1.0,
) -> np.ndarray:
    """The paper's bound, batched over leading axes: UCB_delta2(units) (or the exact mean) + martingale."""
    martingale = delta_range * math.sqrt((complexity_nats + math.log(1.0 / delta1)) / (2.0 * m))
    if units is None:
        return np.asarray(exact_mean) + complexity_scale * martingale
    return np.asarray(get_ucb(ucb)(units, a, a + delta_range, delta2)) + complexity_scale * martingale


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

    def __post_init__(self):
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
)


@dataclass
class _Tally:
    violations: int = 0
    trials: int = 0
    ratios: list = field(default_factory=list)  # per trial: max over alphas of (R - est) / (bound - est)
    excess: list = field(default_factory=list)  # per trial: mean over alphas of bound - est


def _eb_exhaustive_batch(
    mean_loss, mean_sq, t: TokenTables, s: Setting, delta1, drop_variance=False, complexity_scale=1.0
):
    lam = np.asarray(s.lambdas)
    log_term = complexity_scale * (s.complexity_nats + math.log(lam.size / delta1))
    ratio = 0.0 if drop_variance else psi(lam) / lam
    bounds = mean_loss[:, None] + t.delta_range * (ratio * mean_sq[:, None] + log_term / (lam * s.m))
    return bounds.min(axis=1)


def _method_bound(method, units_loss, units_sq, token_loss, token_sq, t, s, d1, d2):
    """(bound, point estimate) for one method and one alpha, each of shape (trials,)."""
    family, unit = method.split("/")[:2]
    rest = method.split("/")[2:]
    if unit == "exhaustive":
        mean_loss, mean_sq = token_loss.mean(axis=1), token_sq.mean(axis=1)
        if family == "lotfi":
            scale = 0.5 if rest == ["half-complexity"] else 1.0
            bound = lotfi_reference_bound(
                None,
                mean_loss,
                a=t.a,
                delta_range=t.delta_range,
                complexity_nats=s.complexity_nats,
                m=s.m,
                delta1=d1,
                complexity_scale=scale,
            )
        else:
            bound = _eb_exhaustive_batch(
                mean_loss,
                mean_sq,
                t,
                s,
                d1,
                drop_variance=rest == ["no-variance-term"],
                complexity_scale=0.5 if rest == ["half-complexity"] else 1.0,
            )
        return bound, mean_loss
    loss, sq = units_loss[unit], units_sq[unit]
    ucb = rest[0]
    if ucb == "plug-in":  # broken on purpose: no subsampling term at all
        return _eb_exhaustive_batch(loss.mean(axis=1), sq.mean(axis=1), t, s, d1), loss.mean(axis=1)
    if family == "lotfi":
        bound = lotfi_reference_bound(
            loss,
            None,
            a=t.a,
            delta_range=t.delta_range,
            complexity_nats=s.complexity_nats,
            m=s.m,
            delta1=d1,
            delta2=d2,
            ucb=ucb,
        )
        return bound, loss.mean(axis=1)
    bound, _, _ = eb_bounds_batch(
        loss,
        sq,
        a=t.a,
        delta_range=t.delta_range,
        complexity_nats=s.complexity_nats,
        m=s.m,
        lambdas=s.lambdas,
        delta1=d1,
        delta2=d2,
        ucb=ucb,
    )
    return bound, loss.mean(axis=1)


def run_setting(
    setting: Setting, n_trials: int, seed: int = 0, methods=METHODS + BROKEN_METHODS, chunk: int = 200
) -> dict:
    """Violation rates of each method over n_trials seeded corpora; returns a JSON-ready dict."""
    s = setting
    setup_rng = np.random.default_rng([s.seed, 12345])  # the source and the predictor: fixed per setting
    chain = random_markov_chain(s.vocab_size, s.order, s.concentration, setup_rng, support=s.support)
    model = perturbed_predictor(chain, setup_rng, s.temperature, s.noise)
    tables = {("loss", alpha): loss_tables(chain, model, alpha) for alpha in s.alphas}
    if any(meth.startswith("eb-topk") for meth in methods):
        tables[("topk", s.topk)] = topk_tables(chain, model, s.topk)
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
        per_method = {meth: ([], [], []) for meth in methods}
        for (kind, _), t in tables.items():
            token_loss = t.loss[states, tokens]
            risk = t.expected_loss[states].mean(axis=1)  # R, exactly
            token_sq = ((t.centring[states] - token_loss) / t.delta_range) ** 2
            rows = np.arange(c)[:, None]
            units_loss = {
                "token": token_loss[rows, token_idx],
                "block": (np.add.reduceat(token_loss, starts, axis=1) / lengths)[rows, block_idx],
            }
            units_sq = {
                "token": token_sq[rows, token_idx],
                "block": (np.add.reduceat(token_sq, starts, axis=1) / lengths)[rows, block_idx],
            }
            n_stats = len(s.alphas) if kind == "loss" else 1
            for meth in methods:
                if meth.startswith("eb-topk") != (kind == "topk"):
                    continue
                exhaustive = meth.split("/")[1] == "exhaustive"
                d1 = s.delta / n_stats if exhaustive else s.delta / (2 * n_stats)
                d2 = 0.0 if exhaustive else s.delta / (2 * n_stats)
                meth_for_bound = meth.replace("eb-topk", "eb")
                bound, est = _method_bound(meth_for_bound, units_loss, units_sq, token_loss, token_sq, t, s, d1, d2)
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
