"""`bound`: sample units -> score them -> statistics -> report. The one place where the parts meet.

Every number in the report holds simultaneously with probability >= 1 - delta: delta is split over all
reported statistics (one per smoothing alpha, one per top-k) and, when units are subsampled, between the
martingale and the subsampling terms (tokenbounds.stats.lotfi.split_delta). The prior is fixed before
the data are looked at: the user's message length or the checkpoint's compressed size, plus extra bits for
any choice made after seeing data.
"""

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from tokenbounds.data.shards import open_corpus
from tokenbounds.data.units import check_context, context_rule, exhaustive_units, sample_positions, token_unit
from tokenbounds.errors import UserError
from tokenbounds.models.hf import load_model
from tokenbounds.models.scorer import score_units
from tokenbounds.stats.lotfi import lotfi_bound, split_delta
from tokenbounds.stats.prior import complexity_nats
from tokenbounds.stats.smoothing import loss_range, smoothed_bits

DEFAULT_ALPHAS = (1e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.25, 0.5)
DEFAULT_KS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 50, 100)
METHODS = ("lotfi",)
MODES = ("token", "exhaustive")


@dataclass
class BoundRequest:
    model: str
    data: str
    dtype: str | None = None  # token dtype of a raw .bin corpus
    eot: int | None = None
    method: str = "lotfi"
    mode: str = "token"
    samples: int = 10_000
    context: int = 1024
    delta: float = 0.05
    seed: int = 0
    message_bits: float | None = None
    checkpoint_size: bool = False
    extra_bits: float = 0.0
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    ks: tuple[int, ...] = DEFAULT_KS
    compute_dtype: str = "float32"
    batch_tokens: int = 8192
    progress: bool = True
    prior_info: dict = field(default_factory=dict)  # filled in: where the message bits came from


def validate(req: BoundRequest) -> None:
    """Refuse bad numbers before loading anything."""
    if req.method not in METHODS:
        raise UserError(f"unknown --method {req.method!r}; use one of {', '.join(METHODS)}")
    if req.mode not in MODES:
        raise UserError(f"unknown --mode {req.mode!r}; use one of {', '.join(MODES)}")
    if not 0.0 < req.delta < 1.0:
        raise UserError(f"--delta must lie in (0, 1), got {req.delta}")
    if req.mode != "exhaustive" and req.samples <= 0:
        raise UserError(f"--samples must be > 0, got {req.samples}")
    if req.context <= 0:
        raise UserError(f"--context must be > 0, got {req.context}")
    if not req.alphas:
        raise UserError("the alpha grid is empty")
    for alpha in req.alphas:
        if not 0.0 < alpha < 1.0:
            raise UserError(f"every alpha must lie in (0, 1), got {alpha}")
    if len(set(req.alphas)) != len(req.alphas) or len(set(req.ks)) != len(req.ks):
        raise UserError("the alpha and k grids must not repeat values")
    for k in req.ks:
        if k < 1:
            raise UserError(f"every k must be >= 1, got {k}")
    if (req.message_bits is None) == (not req.checkpoint_size):
        raise UserError("give the prior as exactly one of --message-bits N or --checkpoint-size")
    if req.message_bits is not None and not (req.message_bits > 0 and math.isfinite(req.message_bits)):
        raise UserError(f"--message-bits must be a positive number of bits, got {req.message_bits}")
    if not (req.extra_bits >= 0 and math.isfinite(req.extra_bits)):
        raise UserError(f"--extra-bits must be >= 0, got {req.extra_bits}")
    if req.batch_tokens <= 0:
        raise UserError(f"--batch-tokens must be > 0, got {req.batch_tokens}")


def _message_bits(req: BoundRequest) -> float:
    if req.message_bits is not None:
        req.prior_info = {"source": "--message-bits"}
        return float(req.message_bits)
    from tokenbounds.compress.codecs import checkpoint_message_bits

    bits, info = checkpoint_message_bits(req.model, progress=req.progress)
    req.prior_info = info
    return bits


def _row(statistic: str, param: dict, loss_min: float, width: float, bound) -> dict:
    """One result row. The loss never exceeds loss_min + width, so neither can R: the bound is clipped there."""
    row = {"statistic": statistic, **param, "loss_min": loss_min, "loss_range": width, **asdict(bound)}
    row["bound"] = min(row["bound"], loss_min + width)
    return row


def compute_bound(req: BoundRequest) -> dict:
    """Run the whole bound and return the JSON report."""
    validate(req)
    corpus = open_corpus(req.data, req.dtype, req.eot)
    model = load_model(req.model, req.compute_dtype)
    vocab = model.vocab_size
    corpus.check_vocab(vocab)
    check_context(req.context, model.max_positions)
    message_bits = _message_bits(req)
    nats = complexity_nats(message_bits, req.extra_bits)
    m = corpus.n_tokens

    rng = np.random.default_rng(req.seed)
    started = time.perf_counter()
    if req.mode == "token":
        # Draws are with replacement: score each distinct position once, then expand back to the draws.
        positions = sample_positions(corpus, req.samples, rng)
        distinct, inverse = np.unique(positions, return_inverse=True)
        units = [token_unit(corpus, int(p), req.context) for p in distinct]
        s = req.samples
    else:
        units, s = exhaustive_units(corpus, req.context), None  # a generator: never all in memory
    total = len(units) if s else m
    scores = score_units(
        model, units, max_tokens=req.batch_tokens, progress=req.progress, total=total, pad_id=corpus.eot
    )
    if s is None:
        if len(scores.logp) != m:
            raise RuntimeError(f"exhaustive scoring covered {len(scores.logp)} of {m} tokens")
        logp, rank = scores.logp, scores.rank
    else:
        logp, rank = scores.logp[inverse], scores.rank[inverse]
    seconds = time.perf_counter() - started

    split = split_delta(req.delta, len(req.alphas) + len(req.ks), subsampled=s is not None)
    results = []
    for alpha in req.alphas:
        a, width = loss_range(alpha, vocab)
        empirical = float(np.mean(smoothed_bits(logp, alpha, vocab)))
        b = lotfi_bound(empirical, width, nats, m, split.martingale, s, split.subsampling or None)
        results.append(_row("bits_per_token", {"alpha": alpha}, a, width, b))
    for k in req.ks:
        empirical = float(np.mean(rank >= k))
        b = lotfi_bound(empirical, 1.0, nats, m, split.martingale, s, split.subsampling or None)
        results.append(_row("top_k_error", {"k": k}, 0.0, 1.0, b))

    bpt = [r for r in results if r["statistic"] == "bits_per_token"]
    best = min(bpt, key=lambda r: r["bound"])
    n_scored = len(scores.logp)
    return {
        "method": req.method,
        "mode": req.mode,
        "delta": req.delta,
        "n_tokens": m,
        "samples": s,
        "vocab_size": vocab,
        "log2_vocab": math.log2(vocab),
        "message_bits": message_bits,
        "extra_bits": req.extra_bits,
        "complexity_nats": nats,
        "context": req.context,
        "context_rule": context_rule(req.context),
        "seed": req.seed,
        "delta_split": split.as_dict(),
        "prior": {"message_bits": message_bits, "extra_bits": req.extra_bits, **req.prior_info},
        "hypothesis": {
            **model.describe(),
            "smoothing": "p_h = (1 - alpha) p_model + alpha / V, one hypothesis per alpha",
            "context_rule": context_rule(req.context),
        },
        "data": {"path": str(req.data), "shards": len(corpus.shards), "n_tokens": m, "eot": corpus.eot},
        "results": results,
        "best_bits_per_token": {"alpha": best["alpha"], "bound": best["bound"], "empirical": best["empirical"]},
        "mean_nll_bits_unsmoothed": float(-np.mean(logp) / math.log(2.0)),
        "timing": {
            "score_seconds": seconds,
            "scored_targets": n_scored,
            "targets_per_second": n_scored / seconds if seconds > 0 else None,
            "input_tokens": scores.input_tokens,
            "input_tokens_per_second": scores.input_tokens / seconds if seconds > 0 else None,
        },
    }
