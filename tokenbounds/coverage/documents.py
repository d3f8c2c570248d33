"""Coverage of the document-level IID bound (`bound --unit document`) on sources whose documents are i.i.d.

A document is a path of a random Markov chain (tokenbounds.coverage.sources) started afresh from state 0 (the
"virtual eot": a history of token 0), of a length drawn uniformly from a fixed set, independently of every other
document; the predictor is the fixed mis-specified one of the token-level study, seeing the previous k tokens of
its own document only (the document rule). The bounded quantity, the expected mean loss of one document,

    R_doc = sum_T P(T) (1/T) sum_{t < T} pi_t . e,     pi_0 = 1[state 0],  pi_{t+1} = pi_t M,

(e the expected next-token loss of each state, M the chain's state-to-state matrix) is computed exactly, and each
trial's bound is the pipeline's: `statistic_bound("lotfi", ...)` with m = n documents and the delta split of
`report_delta_split`, units drawn uniformly over the n documents (exhaustive: every document's mean).

The deliberately broken variant `lotfi/document/betting/length-weighted` draws documents in proportion to their
length (the token and block modes' rule), so its draws estimate the token-weighted mean, not R_hat_doc: caught in
hard-start-V50, where a document's first token (from state 0) is far harder than the rest, so short documents have a
much higher mean loss.
"""

from dataclasses import asdict, dataclass

import numpy as np

from tokenbounds.coverage.sources import (
    MarkovChain,
    loss_tables,
    perturbed_predictor,
    random_markov_chain,
    sample_paths,
)
from tokenbounds.coverage.table import binomial_allowance
from tokenbounds.stats.bound import report_delta_split, statistic_bound

METHODS = ("lotfi/document/exhaustive", "lotfi/document/hoeffding", "lotfi/document/betting")
BROKEN_METHODS = ("lotfi/document/betting/length-weighted",)


@dataclass(frozen=True)
class DocumentSetting:
    """An i.i.d.-document source, a predictor and a document-level bound configuration."""

    name: str
    vocab_size: int
    order: int
    concentration: float
    temperature: float
    noise: float
    alphas: tuple[float, ...]
    n_documents: int  # n
    lengths: tuple[int, ...]  # a document's length is uniform over these
    samples: int  # s: documents drawn
    delta: float
    complexity_nats: float = 0.0
    support: int | None = None
    hard_start: bool = False  # the first token of a document is uniform over V (state 0's row)
    seed: int = 0


def document_source(s: DocumentSetting) -> tuple[MarkovChain, np.ndarray]:
    """The setting's chain and predictor (seeded by s.seed alone, the same in every trial)."""
    rng = np.random.default_rng([s.seed, 777])
    chain = random_markov_chain(s.vocab_size, s.order, s.concentration, rng, support=s.support)
    if s.hard_start:
        transition = chain.transition.copy()
        transition[0] = 1.0 / s.vocab_size
        chain = MarkovChain(transition, chain.order)
    return chain, perturbed_predictor(chain, rng, s.temperature, s.noise)


def expected_document_loss(chain: MarkovChain, expected_loss: np.ndarray, lengths) -> float:
    """R_doc exactly: the mean over lengths T (uniform) of (1/T) sum_{t<T} pi_t . e, pi_t the state law at t."""
    n, vocab = chain.n_states, chain.vocab_size
    step = np.zeros((n, n))
    for y in range(vocab):
        np.add.at(step, (np.arange(n), (np.arange(n) * vocab + y) % n), chain.transition[:, y])
    pi = np.zeros(n)
    pi[0] = 1.0
    per_step = []
    for _ in range(max(lengths)):
        per_step.append(float(pi @ expected_loss))
        pi = pi @ step
    running = np.cumsum(per_step)
    return float(np.mean([running[t - 1] / t for t in lengths]))


def length_weighted_draws(lengths: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """(trials, samples) document indices drawn in proportion to length (the broken variant): per row, a uniform
    position in the row's tokens and the document holding it (rows laid end to end for one searchsorted)."""
    trials, n = lengths.shape
    cum = np.cumsum(lengths, axis=1)
    shift = np.concatenate([[0], np.cumsum(cum[:, -1])[:-1]])
    positions = np.floor(rng.random((trials, samples)) * cum[:, -1:]) + shift[:, None]
    flat = np.searchsorted((cum + shift[:, None]).ravel(), positions.ravel(), side="right")
    return flat.reshape(trials, samples) - np.arange(trials)[:, None] * n


def run_document_setting(s: DocumentSetting, n_trials: int, seed: int = 0, chunk: int = 100) -> dict:
    """Violation rates of each document method over n_trials seeded corpora of n i.i.d. documents."""
    chain, model = document_source(s)
    tables = {alpha: loss_tables(chain, model, alpha) for alpha in s.alphas}
    risks = {alpha: expected_document_loss(chain, t.expected_loss, s.lengths) for alpha, t in tables.items()}
    rng = np.random.default_rng([seed, s.seed, 1])
    methods = METHODS + BROKEN_METHODS
    violations = dict.fromkeys(methods, 0)
    lengths_grid = np.asarray(s.lengths)
    done = 0
    while done < n_trials:
        c = min(chunk, n_trials - done)
        states, tokens = sample_paths(chain, c * s.n_documents, int(lengths_grid.max()), rng)
        lengths = rng.choice(lengths_grid, size=(c, s.n_documents))
        inside = np.arange(lengths_grid.max())[None, None, :] < lengths[..., None]  # (c, n, T_max)
        uniform = rng.integers(0, s.n_documents, size=(c, s.samples))
        weighted = length_weighted_draws(lengths, s.samples, rng)
        failed = {meth: np.zeros(c, dtype=bool) for meth in methods}
        rows = np.arange(c)[:, None]
        for alpha, t in tables.items():
            token_loss = t.loss[states, tokens].reshape(c, s.n_documents, -1)
            doc_means = np.where(inside, token_loss, 0.0).sum(axis=-1) / lengths  # (c, n)
            for meth in methods:
                sampled = meth != "lotfi/document/exhaustive"
                split = report_delta_split(
                    s.delta,
                    len(s.alphas),
                    complexity_nats=s.complexity_nats,
                    m=s.n_documents,
                    s=s.samples if sampled else None,
                )
                common = {"a": t.a, "delta_range": t.delta_range, "complexity_nats": s.complexity_nats}
                common.update(m=s.n_documents, delta1=split.delta1)
                if not sampled:
                    bound = statistic_bound("lotfi", doc_means.mean(axis=1), **common).bound
                else:
                    drawn = uniform if not meth.endswith("/length-weighted") else weighted
                    ucb = meth.split("/")[2]
                    values = doc_means[rows, drawn]
                    bound = statistic_bound("lotfi", values, delta2=split.delta2, ucb=ucb, **common).bound
                failed[meth] |= risks[alpha] > bound  # any alpha fails: the trial is violated
        for meth in methods:
            violations[meth] += int(failed[meth].sum())
        done += c
    allowed = binomial_allowance(s.delta, n_trials)
    return {
        "setting": asdict(s),
        "trials": n_trials,
        "risks": {str(a): r for a, r in risks.items()},
        "methods": {
            meth: {
                "violations": v,
                "trials": n_trials,
                "violation_rate": v / n_trials,
                "allowed": allowed,
                "broken": meth in BROKEN_METHODS,
            }
            for meth, v in violations.items()
        },
    }


DOCUMENT_SETTINGS = {
    # Documents of 1 to 40 tokens from a first-order chain; few draws, so the subsampling term matters.
    "documents-V50": DocumentSetting(
        name="documents-V50",
        vocab_size=50,
        order=1,
        concentration=0.1,
        temperature=1.3,
        noise=0.5,
        alphas=(0.01, 0.1),
        n_documents=300,
        lengths=(1, 2, 5, 10, 40),
        samples=60,
        delta=0.1,
    ),
    # Two-point losses (the predictor bets on one of two tokens) in documents of 1 or 2 tokens: doc means near the
    # ends of the range, where Hoeffding is nearly tight.
    "coin-documents-V50": DocumentSetting(
        name="coin-documents-V50",
        vocab_size=50,
        order=1,
        concentration=30.0,
        support=2,
        temperature=1e-3,
        noise=0.0,
        alphas=(1e-3,),
        n_documents=400,
        lengths=(1, 2),
        samples=200,
        delta=0.05,
    ),
    # A hard first token (uniform over V from state 0) and easy rows after it; lengths 1 or 30, so short documents
    # have a far higher mean loss and a length-weighted draw misses R_doc.
    "hard-start-V50": DocumentSetting(
        name="hard-start-V50",
        vocab_size=50,
        order=1,
        concentration=0.05,
        temperature=1.0,
        noise=0.2,
        alphas=(0.01,),
        n_documents=1000,
        lengths=(1, 30),
        samples=500,
        delta=0.1,
        hard_start=True,
    ),
}
