"""The simulated sources of the coverage study: sources whose conditional probabilities are known exactly.

A random k-th order Markov chain over V tokens (each row a Dirichlet draw, optionally on a random support of a few
tokens) generates a corpus x_1..x_m. A fixed, mis-specified predictor (the true rows tempered, perturbed with
log-normal noise and renormalised, then smoothed with weight alpha) plays the hypothesis h; its context rule is
"the previous k tokens" (the first k positions see a history of token 0). Because the chain is known, the bounded
quantity is computed exactly for every simulated corpus:

    R = (1/m) sum_i E[l_i | x_<i] = (1/m) sum_i sum_y P(y | s_i) l_h(y | s_i),

with s_i the chain state before x_i. The per-state tables here (the loss of every next token, its expectation under
the chain, the centring) turn a sampled path into the bound's inputs and R by indexing. Top-k error uses
l_i = 1[x_i not among the predictor's k most probable tokens], with R the error of a real decoder (ties broken
towards low token ids); the shipped loss is >= it pointwise.
"""

from dataclasses import dataclass

import numpy as np

from tokenbounds.models.scorer import centrings
from tokenbounds.stats.smoothing import loss_range, smoothed_bits
from tokenbounds.stats.topk import pessimistic_rank, topk_error


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
        centring=centrings(model_probs, alphas=[alpha])[0][:, 0],  # the scorer's own
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
    """Top-k error, centred at the model's probability mass outside its k most probable tokens (as the scorer
    estimates it: `tokenbounds.models.scorer.centrings`, the scorer's own code).

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
    return TokenTables(
        loss=topk_error(rank, k),
        expected_loss=np.sum(chain.transition * decoder_topk_error(model_probs, k), axis=1),
        centring=centrings(model_probs, ks=[k])[1][:, 0],  # the scorer's own
        a=0.0,
        delta_range=1.0,
    )


def tied_predictor(model_probs: np.ndarray, grid: float) -> np.ndarray:
    """Probabilities rounded down to multiples of `grid` and renormalised: many exactly tied values per row (all
    the tokens below one grid step tie at 0); a row with nothing left becomes uniform (all V tied)."""
    q = np.floor(model_probs / grid) * grid
    q[q.sum(axis=1) == 0] = 1.0
    return q / q.sum(axis=1, keepdims=True)
