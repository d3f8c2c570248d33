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
"""

import math
import time
from dataclasses import dataclass

import numpy as np

from tokenbounds.compress.pricing import checkpoint_message_bits, quantized_message_bits
from tokenbounds.compress.quantized_dir import is_quantized_dir, load_quantized
from tokenbounds.data.shards import Corpus, open_corpus
from tokenbounds.data.units import (
    block_ids,
    block_rule,
    block_unit,
    check_block,
    check_context,
    context_rule,
    exhaustive_block_units,
    exhaustive_units,
    sample_blocks,
    sample_positions,
    token_unit,
)
from tokenbounds.errors import UserError
from tokenbounds.models.base import check_device
from tokenbounds.models.registry import open_model
from tokenbounds.models.scorer import score_units
from tokenbounds.report.io import check_finite
from tokenbounds.stats.bound import report_delta_split, statistic_bound
from tokenbounds.stats.eb import check_lambda_grid, default_lambda_grid
from tokenbounds.stats.nll import unsmoothed_nll
from tokenbounds.stats.prior import complexity_nats
from tokenbounds.stats.smoothing import loss_range, smoothed_bits
from tokenbounds.stats.subsample import UCBS
from tokenbounds.stats.topk import topk_error
from tokenbounds.streams import BOUND_UNITS, describe, stream

DEFAULT_ALPHAS = (1e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.25, 0.5)
DEFAULT_KS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 50, 100)
METHODS = ("lotfi", "eb")
MODES = ("token", "block", "exhaustive")
RULES = ("document", "block")
UCB_NAMES = tuple(UCBS)
# The tightest valid configuration is the default: eb, block units (block context rule, stride = context), betting.
DEFAULT_METHOD, DEFAULT_MODE, DEFAULT_UCB = "eb", "block", "betting"
PAPER = {"method": "lotfi", "mode": "token", "subsample_ucb": "hoeffding"}  # Lotfi et al. 2024's configuration


@dataclass
class BoundRequest:
    model: str
    data: str
    dtype: str | None = None  # token dtype of a raw .bin corpus
    eot: int | None = None
    method: str = DEFAULT_METHOD
    mode: str = DEFAULT_MODE
    rule: str | None = None  # context rule; default: block for block mode, document otherwise
    samples: int = 10_000
    context: int = 1024
    stride: int | None = None  # block rule: scored block length (divides context); default = context
    delta: float = 0.05
    seed: int = 0
    message_bits: float | None = None
    checkpoint_size: bool = False
    codecs: tuple[str, ...] = ("gzip",)  # --checkpoint-size: codecs tried (best one kept, log2 K extra bits)
    extra_bits: float = 0.0
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    ks: tuple[int, ...] = DEFAULT_KS
    lambdas: tuple[float, ...] | None = None  # eb: the lambda grid (default: stats.eb.default_lambda_grid)
    subsample_ucb: str = DEFAULT_UCB
    compute_dtype: str = "float32"
    device: str = "cpu"
    quip_sharp: str | None = None  # a quip-sharp checkout, for QuIP# checkpoints
    quip_python: str | None = None  # the Python of quip-sharp's environment (default: this one)
    batch_tokens: int = 8192
    verify_data: bool = False  # re-hash every shard and check every id before scoring (one full read)
    progress: bool = True

    def __post_init__(self):
        self.rule = self.rule or ("block" if self.mode == "block" else "document")
        self.stride = self.context if self.stride is None else self.stride


def validate(req: BoundRequest) -> None:
    """Refuse bad numbers before loading anything."""
    choices = {"--method": (req.method, METHODS), "--mode": (req.mode, MODES), "--rule": (req.rule, RULES)}
    choices["--subsample-ucb"] = (req.subsample_ucb, UCB_NAMES)
    for flag, (value, allowed) in choices.items():
        if value not in allowed:
            raise UserError(f"unknown {flag} {value!r}; use one of {', '.join(allowed)}")
    if req.mode == "token" and req.rule != "document":
        raise UserError("token mode uses the document context rule; use --mode block for the block rule")
    if req.mode == "block" and req.rule != "block":
        raise UserError("block mode needs the block context rule (--rule block)")
    if not 0.0 < req.delta < 1.0:
        raise UserError(f"--delta must lie in (0, 1), got {req.delta}")
    if req.mode != "exhaustive" and req.samples <= 0:
        raise UserError(f"--samples must be > 0, got {req.samples}")
    if req.mode != "exhaustive" and req.subsample_ucb == "maurer-pontil" and req.samples < 2:
        raise UserError("--subsample-ucb maurer-pontil needs --samples >= 2 (it estimates a variance)")
    if req.context <= 0:
        raise UserError(f"--context must be > 0, got {req.context}")
    if req.rule == "block":
        check_block(req.context, req.stride)
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
    if req.lambdas is not None:
        try:
            check_lambda_grid(req.lambdas)
        except ValueError as err:
            raise UserError(f"--lambdas: {err}") from None
    if req.message_bits is not None and req.checkpoint_size:
        raise UserError("give the prior as one of --message-bits N or --checkpoint-size, not both")
    if req.message_bits is not None and not (req.message_bits > 0 and math.isfinite(req.message_bits)):
        raise UserError(f"--message-bits must be a positive number of bits, got {req.message_bits}")
    if not (req.extra_bits >= 0 and math.isfinite(req.extra_bits)):
        raise UserError(f"--extra-bits must be >= 0, got {req.extra_bits}")
    if req.batch_tokens <= 0:
        raise UserError(f"--batch-tokens must be > 0, got {req.batch_tokens}")
    if req.quip_python is not None and req.quip_sharp is None:
        raise UserError("--quip-python needs --quip-sharp")
    if req.quip_sharp is None:  # a quip-sharp worker runs its own torch and checks the device there
        check_device(req.device)


def _prior(req: BoundRequest, manifest: dict | None) -> tuple[float, float, dict]:
    """(message bits, extra bits, record of where they came from), fixed before any token is scored.

    A quantized directory (its manifest already verified by `load_quantized`: message, config and weights agree)
    prices itself. `--message-bits` for such a directory may only claim a message at least as long as its own
    verified one (a shorter claim is a description nobody has shown to exist), and never drops the extra bits the
    manifest requires. Extra bits the prior requires (log2 of the codecs tried, or of the quantization
    configurations declared) are added to the user's --extra-bits.

    The record's `data_choice_bits` counts the bits of choices that could have seen the data, the bound's
    subsample included: the user's --extra-bits and a manifest's configurations tried. The delta split divides the
    subsampling term's delta by 2^data_choice_bits for them. The choice among codecs is not counted there: it
    looks only at the checkpoint's compressed sizes, which do not depend on the data.
    """
    if manifest is not None:
        bits, info = quantized_message_bits(req.model, manifest)
        if req.message_bits is not None:
            if req.message_bits < bits:
                raise UserError(
                    f"--message-bits {req.message_bits:g} is shorter than this quantized directory's own verified "
                    f"message ({bits:,.0f} bits); give at least that, or leave --message-bits out"
                )
            info = {**info, "source": "--message-bits (checked against the quantized message)", "verified_bits": bits}
            bits = float(req.message_bits)
        required = info["required_extra_bits"]
        return bits, req.extra_bits + required, {**info, "data_choice_bits": req.extra_bits + required}
    if req.message_bits is not None:
        return float(req.message_bits), req.extra_bits, {"source": "--message-bits", "data_choice_bits": req.extra_bits}
    if req.checkpoint_size:
        bits, info = checkpoint_message_bits(req.model, progress=req.progress, codecs=req.codecs)
    else:
        raise UserError("give the prior: --message-bits N, or --checkpoint-size to price the checkpoint file(s)")
    return bits, req.extra_bits + info["required_extra_bits"], {**info, "data_choice_bits": req.extra_bits}


@dataclass
class UnitPlan:
    """What to score and how the draws map onto it."""

    units: object  # a list (sampled modes: distinct units) or an iterator (exhaustive)
    n_targets: int  # targets to score, for the progress bar
    draws: np.ndarray | None  # per draw, in sampling order: index of its unit in `units`; None if exhaustive
    rule: str


def plan_units(req: BoundRequest, corpus: Corpus, rng: np.random.Generator) -> UnitPlan:
    """Draw the units (with replacement) and keep each distinct one once: duplicates cost no forward pass."""
    if req.rule == "block":
        check_block(req.context, req.stride, corpus)
        rule = block_rule(req.context, req.stride)
    else:
        rule = context_rule(req.context)
    if req.mode == "exhaustive":
        if req.rule == "block":
            return UnitPlan(exhaustive_block_units(corpus, req.context, req.stride), corpus.n_tokens, None, rule)
        return UnitPlan(exhaustive_units(corpus, req.context), corpus.n_tokens, None, rule)
    if req.mode == "token":
        distinct, draws = np.unique(sample_positions(corpus, req.samples, rng), return_inverse=True)
        units = [token_unit(corpus, int(p), req.context) for p in distinct]
    else:
        distinct, draws = np.unique(sample_blocks(corpus, req.samples, req.stride, rng), return_inverse=True)
        shards, blocks = block_ids(corpus, req.stride)
        units = [block_unit(corpus, int(shards[b]), int(blocks[b]), req.context, req.stride) for b in distinct]
    return UnitPlan(units, sum(u.n_targets for u in units), draws.reshape(-1), rule)


def _unit_means(values: np.ndarray, unit: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.bincount(unit, weights=values, minlength=len(counts)) / counts


def compute_bound(req: BoundRequest) -> dict:
    """Run the whole bound and return the JSON report."""
    return compute_bound_with_units(req)[0]


def compute_bound_with_units(req: BoundRequest) -> tuple[dict, dict | None]:
    """The JSON report and, for sampled modes, the per-unit values every row's bound was computed from.

    The units dict (what `bound --units-out FILE.npz` writes): `statistics`, one label per report row in row order;
    `unit_loss` of shape (rows, s), each row's unit values in sampling order; `unit_sq` (eb only), the units' means
    of ((c - l)/Delta)^2; `draws`, each draw's index among the distinct units scored. None when exhaustive.
    """
    validate(req)
    corpus = open_corpus(req.data, req.dtype, req.eot)
    # A quantized directory is decoded and verified once, before it is evaluated or priced.
    verified = load_quantized(req.model) if is_quantized_dir(req.model) else None
    model = open_model(
        req.model,
        req.compute_dtype,
        req.device,
        verified=verified,
        quip_sharp=req.quip_sharp,
        quip_python=req.quip_python,
    )
    vocab = model.vocab_size
    corpus.check_vocab(vocab)
    if req.verify_data:  # opt-in: one full read of the corpus (hashes against prepare's, every id against V)
        corpus.verify(vocab, progress=req.progress)
    check_context(req.context, model.max_positions)
    message_bits, extra_bits, prior_info = _prior(req, verified[1] if verified else None)
    nats = complexity_nats(message_bits, extra_bits)
    m = corpus.n_tokens
    plan = plan_units(req, corpus, stream(req.seed, BOUND_UNITS))
    eb = req.method == "eb"

    started = time.perf_counter()
    scores = score_units(
        model,
        plan.units,
        alphas=list(req.alphas) if eb else None,
        ks=list(req.ks) if eb else None,
        max_tokens=req.batch_tokens,
        progress=req.progress,
        total=plan.n_targets,
        pad_id=corpus.eot,
    )
    seconds = time.perf_counter() - started
    if plan.draws is None and len(scores.logp) != m:
        raise RuntimeError(f"exhaustive scoring covered {len(scores.logp)} of {m} tokens")

    sampled = plan.draws is not None
    s = len(plan.draws) if sampled else None
    n_statistics = len(req.alphas) + len(req.ks)
    lambdas = np.asarray(req.lambdas if req.lambdas is not None else default_lambda_grid())
    split = report_delta_split(
        req.delta,
        n_statistics,
        complexity_nats=nats,
        m=m,
        s=s,
        n_points=len(lambdas) + 1 if eb else 1,
        data_choice_bits=prior_info.get("data_choice_bits", 0.0),
    )
    counts = np.bincount(scores.unit).astype(np.float64)
    units_loss, units_sq = [], []

    def row(statistic: str, param: dict, loss: np.ndarray, centring: np.ndarray | None, a: float, width: float):
        """One report row from per-target losses (and the eb centring): per-unit values -> statistic_bound."""
        sq = ((centring - loss) / width) ** 2 if eb else None
        if sampled:
            loss_in = _unit_means(loss, scores.unit, counts)[plan.draws]
            sq_in = _unit_means(sq, scores.unit, counts)[plan.draws] if eb else None
            units_loss.append(loss_in)
            units_sq.append(sq_in)
        else:
            loss_in, sq_in = float(loss.mean()), float(sq.mean()) if eb else None
        b = statistic_bound(
            req.method,
            loss_in,
            sq_in,
            a=a,
            delta_range=width,
            complexity_nats=nats,
            m=m,
            delta1=split.delta1,
            delta2=split.delta2 if sampled else None,
            ucb=req.subsample_ucb if sampled else None,
            lambdas=lambdas,
        )
        spread = {"unit_std": float(np.std(loss_in)) if sampled else None, "token_std": float(np.std(loss))}
        return {"statistic": statistic, **param, "loss_min": a, "loss_range": width, **b.row(), **spread}

    results = []
    for j, alpha in enumerate(req.alphas):
        a, width = loss_range(alpha, vocab)
        loss = smoothed_bits(scores.logp, alpha, vocab)
        # The scorer's entropy is float32; the centring only needs c >= a, so clip the rounding away.
        centring = np.maximum(scores.entropy_bits[:, j].astype(np.float64), a) if eb else None
        results.append(row("bits_per_token", {"alpha": alpha}, loss, centring, a, width))
    for j, k in enumerate(req.ks):
        errors = topk_error(scores.rank, k)  # ties counted against the model
        centring = np.clip(scores.outside_topk[:, j].astype(np.float64), 0.0, 1.0) if eb else None
        results.append(row("top_k_error", {"k": k}, errors, centring, 0.0, 1.0))

    units = None
    if sampled:
        labels = [f"alpha={r['alpha']!r}" if "alpha" in r else f"k={r['k']}" for r in results]
        units = {"statistics": np.array(labels), "unit_loss": np.stack(units_loss), "draws": plan.draws}
        if eb:
            units["unit_sq"] = np.stack(units_sq)
    bpt = [r for r in results if r["statistic"] == "bits_per_token"]
    best = min(bpt, key=lambda r: r["bound"])
    n_scored = len(scores.logp)
    report = {
        "method": req.method,
        "mode": req.mode,
        "delta": req.delta,
        "n_tokens": m,
        "samples": s,
        "distinct_units": len(plan.units) if sampled else None,
        "vocab_size": vocab,
        "log2_vocab": math.log2(vocab),
        "message_bits": message_bits,
        "extra_bits": extra_bits,
        "complexity_nats": nats,
        "context": req.context,
        "stride": req.stride if req.rule == "block" else None,
        "context_rule": plan.rule,
        "subsample_ucb": req.subsample_ucb if sampled else None,
        "lambdas": lambdas.tolist() if eb else None,
        "seed": req.seed,
        "random_stream": describe(req.seed, BOUND_UNITS),
        "delta_split": split.as_dict(),
        "prior": {
            "message_bits": message_bits,
            "extra_bits": extra_bits,
            "user_extra_bits": req.extra_bits,
            **prior_info,
        },
        "hypothesis": {
            **model.describe(),
            "smoothing": "p_h = (1 - alpha) p_model + alpha / V, one hypothesis per alpha",
            "context_rule": plan.rule,
        },
        "data": {
            "path": str(req.data),
            "shards": len(corpus.shards),
            "n_tokens": m,
            "eot": corpus.eot,
            "verification": corpus.verification(every_token_read=not sampled),
        },
        "results": results,
        "best_bits_per_token": {"alpha": best["alpha"], "bound": best["bound"], "empirical": best["empirical"]},
        **unsmoothed_nll(scores.logp),  # null, with a count, where the model gave a target probability 0
        "timing": {
            "score_seconds": seconds,
            "scored_targets": n_scored,
            "targets_per_second": n_scored / seconds if seconds > 0 else None,
            "input_tokens": scores.input_tokens,
            "input_tokens_per_second": scores.input_tokens / seconds if seconds > 0 else None,
        },
    }
    check_finite(report)  # a NaN or infinity here is a bug: refuse it rather than print or write it
    return report, units
