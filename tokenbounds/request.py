"""What `bound` is asked to do: one config dataclass whose fields are the command's flags and the report's record.

Each field is declared once (`tokenbounds.config.flag`): its type, default and help generate `bound --help`, its value
is what `compute_bound` runs and what the report stores under "config". Only light modules are imported here, so
`bound --help` answers before torch is loaded.

Defaults: the tightest valid configuration, eb + block units (block context rule, stride = context) + the betting
UCB; `--paper` is the paper's configuration, lotfi + token units (document rule) + Hoeffding.
"""

import math
from dataclasses import dataclass

from tokenbounds.config import flag, parse_config
from tokenbounds.data.documents import UNITS
from tokenbounds.data.units import ContextRule
from tokenbounds.errors import UserError
from tokenbounds.stats.lambda_grid import check_lambda_grid
from tokenbounds.stats.subsample import ANYTIME_UCBS, UCBS

DEFAULT_ALPHAS = (1e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.25, 0.5)
DEFAULT_KS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 50, 100)
METHODS = ("lotfi", "eb")
MODES = ("token", "block", "exhaustive")
PAPER = {"method": "lotfi", "mode": "token", "subsample_ucb": "hoeffding"}  # Lotfi et al. 2024's configuration
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")

DATA, PRIOR, BOUND, RUN = "data", "prior (what the hypothesis costs)", "bound", "compute"


@dataclass
class BoundRequest:
    model: str = flag(
        metavar="PATH",
        help="a Hugging Face model directory, a .gguf file, a directory from `tokenbounds quantize` or `train`, or a "
        "QuIP# checkpoint directory (with --quip-sharp)",
    )
    data: str = flag(metavar="PATH", help="a shard directory from `prepare`, or a raw nanoGPT .bin file", group=DATA)
    dtype: str | None = flag(
        None, choices=("uint16", "uint32"), help="token dtype of a raw .bin file", group=DATA, default_text="meta's"
    )
    eot: int | None = flag(
        None, metavar="ID", help="end-of-text id of a raw .bin file", group=DATA, default_text="meta.json's"
    )
    verify_data: bool = flag(
        False,
        group=DATA,
        help="before scoring, re-hash every shard against prepare's sha256 and check every token id against V (one "
        "full read of the corpus; without it every token that is scored is checked, and the report says so)",
    )
    method: str = flag(
        "eb",
        choices=METHODS,
        group=BOUND,
        help="lotfi: the paper's Azuma-Hoeffding martingale bound (pays the full loss range); eb: the entropy-centred "
        "empirical-Bernstein bound, with lotfi's bound as one more point of its union (pays the spread of the loss "
        "around the model's own entropy; same guarantee, never looser than lotfi but for that union's cost)",
    )
    mode: str = flag(
        "block",
        choices=MODES,
        group=BOUND,
        help="token: s positions drawn uniformly with replacement, one forward pass each (the paper's; document rule); "
        "block: s aligned blocks drawn in proportion to their length, all their tokens scored in one pass, unit = "
        "block mean (block rule); exhaustive: every token (exact empirical risk, no subsampling term). With --unit "
        "document|sequence only exhaustive (every unit) may be given; otherwise --samples units are drawn",
    )
    unit: str = flag(
        "token",
        choices=UNITS,
        group=BOUND,
        help="what one data point of the bound is. token: the paper's token-level bounds of the conditional risk "
        "(each token weighs the same), --mode says how tokens are sampled; document / sequence: the predecessor's "
        "IID bound (Lotfi et al. ICML 2024) of the expected mean loss of one document (document rule, sliding "
        "windows) or one aligned sequence of --context tokens (block rule), n = number of documents (sequences) in "
        "the complexity term, each weighing the same, assumed i.i.d.; then --samples units are drawn uniformly, or "
        "every one with --mode exhaustive, and --method defaults to lotfi",
    )
    rule: str | None = flag(
        None,
        choices=ContextRule.KINDS,
        group=BOUND,
        default_text="block for block mode, document otherwise",
        help="context rule of the hypothesis: document (the previous <= L tokens since the last eot) or block "
        "(context resets at aligned blocks of --stride tokens, each seen after the L - S tokens before it)",
    )
    samples: int = flag(
        10_000, metavar="S", group=BOUND, help="sampled units s (tokens, blocks, documents or sequences)"
    )
    context: int = flag(
        1024, metavar="L", group=BOUND, help="context length L: each token sees at most the previous L tokens"
    )
    stride: int | None = flag(
        None,
        metavar="S",
        group=BOUND,
        default_text="--context",
        help="block rule: scored block length, a divisor of --context; every token of a block sees >= L - S tokens",
    )
    delta: float = flag(0.05, group=BOUND, help="failure probability shared by all reported bounds")
    seed: int = flag(
        0, group=BOUND, help="seed of the units drawn (its own stream: never a training stream, whatever the seeds)"
    )
    subsample_ucb: str = flag(
        "betting",
        choices=tuple(UCBS),
        group=BOUND,
        help="upper confidence bound for the subsampled empirical risk: hoeffding (the paper's), maurer-pontil "
        "(empirical Bernstein), betting (Waudby-Smith & Ramdas 2024, running intersection)",
    )
    target_slack: float | None = flag(
        None,
        metavar="EPS",
        group=BOUND,
        default_text="off: every one of --samples draws is scored",
        help="sample in rounds of 64, 128, 256, ... draws up to --samples, and stop at the first round where the best "
        "bits-per-token row's subsampling term is <= EPS bits; with the betting UCB's anytime-valid form (bets tuned "
        "for --samples, fixed in advance), so stopping on the data keeps every reported number's guarantee",
    )
    alphas: tuple[float, ...] = flag(DEFAULT_ALPHAS, metavar="A1,A2,...", group=BOUND, help="smoothing weights")
    ks: tuple[int, ...] = flag(DEFAULT_KS, name="--topk", metavar="K1,K2,...", group=BOUND, help="k values of top-k")
    lambdas: tuple[float, ...] | None = flag(
        None,
        metavar="L1,L2,...",
        group=BOUND,
        default_text="42 values from 1e-4 to 0.9, uniform in logit, so rounding to the grid costs < 1%%",
        help="eb: the lambda grid, values strictly between 0 and 1, fixed in advance",
    )
    paper: bool = flag(
        False, group=BOUND, help="the paper's configuration: --method lotfi --mode token --subsample-ucb hoeffding"
    )
    message_bits: float | None = flag(
        None,
        metavar="N",
        group=PRIOR,
        default_text="none: a quantized directory's own message, or --checkpoint-size",
        help="length in bits of the model's description (the prior)",
    )
    checkpoint_size: bool = flag(
        False,
        group=PRIOR,
        help="price the model by its compressed checkpoint size: the paper's recipe (gzip -c of one file, tar -czf of "
        "several, with the architecture config), or the best of --codecs. A directory written by `tokenbounds "
        "quantize` prices itself by its coded message (verified against its weights) when no prior is given",
    )
    codecs: tuple[str, ...] = flag(
        ("gzip",),
        metavar="C1,C2,...",
        group=PRIOR,
        help="--checkpoint-size: codecs to try (gzip, xz, zstd, brotli, or NAME:LEVEL); the shortest is kept and "
        "log2(number tried) extra bits are paid",
    )
    extra_bits: float = flag(
        0.0,
        metavar="B",
        group=PRIOR,
        help="bits paid for choices made after seeing the data: log2 of the number of options tried (they may have "
        "seen the subsample, so the subsampling term's delta is divided by 2^B too)",
    )
    compute_dtype: str = flag(
        "auto",
        choices=COMPUTE_DTYPES,
        group=RUN,
        help="dtype of the forward pass, part of the hypothesis: bfloat16 casts the weights (log-softmax is float32); "
        "auto: bfloat16 on a GPU or on a CPU with AMX / AVX512-BF16 (where it is fast), float32 elsewhere and for "
        "backends that run only float32 (QuIP#); the choice is recorded in the report",
    )
    device: str = flag(
        "cpu",
        group=RUN,
        help="torch device for the forward passes: cpu, cuda, cuda:N, or auto (a Hugging Face model spread over every "
        "visible GPU by accelerate's device map, for models larger than one GPU)",
    )
    quip_sharp: str | None = flag(
        None,
        metavar="DIR",
        group=RUN,
        default_text="none",
        help="QuIP# checkpoints: a quip-sharp checkout (kernels built) that decodes and runs the model in a worker "
        "process; use --device cuda (or auto: spread over GPUs)",
    )
    quip_python: str | None = flag(
        None,
        metavar="PYTHON",
        group=RUN,
        default_text="this one",
        help="the Python interpreter of quip-sharp's environment (it pins torch 2.1 / transformers 4.34)",
    )
    batch_tokens: int = flag(8192, metavar="N", group=RUN, help="padded tokens per forward batch")
    progress: bool = flag(True, name="--no-progress", group=RUN, help="hide the progress bar")
    run_dir: str | None = flag(
        None,
        metavar="DIR",
        group=RUN,
        default_text="none: nothing kept",
        help="keep every finished batch's per-unit sums here (checksummed records, appended as they are computed), "
        "so that a killed run can be finished with --resume; DIR must be new or empty",
    )
    resume: bool = flag(
        False,
        group=RUN,
        help="finish the run recorded in --run-dir: only its missing batches are scored, and the report is the one "
        "an uninterrupted run gives; refused if the model, corpus, seed or any setting differs",
    )

    def context_rule(self) -> ContextRule:
        """The hypothesis' context rule: --rule, or the one --unit or --mode implies."""
        implied = {"document": "document", "sequence": "block"}.get(self.unit)
        kind = self.rule or implied or ("block" if self.mode == "block" else "document")
        if kind == "block":
            return ContextRule.block(self.context, self.stride)
        if self.stride is not None:
            raise UserError("--stride belongs to the block context rule (--rule block or --mode block)")
        return ContextRule.document(self.context)


def request_from_flags(namespace) -> BoundRequest:
    """The request the command line asked for; `--paper` fills in the paper's configuration, and refuses a flag
    that contradicts it (a contradiction is only visible here, where we know which flags were typed)."""
    req, given = parse_config(BoundRequest, namespace)
    if req.paper:
        for name, value in PAPER.items():
            if name in given and getattr(req, name) != value:
                option = "--" + name.replace("_", "-")
                raise UserError(f"--paper means {option} {value}; it contradicts {option} {getattr(req, name)}")
            setattr(req, name, value)
    if req.unit != "token":
        if req.paper:
            raise UserError(f"--paper is the token-level configuration; --unit {req.unit} is the IID bound over units")
        if "mode" in given and req.mode != "exhaustive":
            raise UserError(
                f"--mode {req.mode} samples tokens or blocks; with --unit {req.unit} the sampled units are "
                f"{req.unit}s: omit --mode (--samples {req.unit}s drawn uniformly) or give --mode exhaustive"
            )
        if "method" not in given:
            req.method = "lotfi"
    return req


def validate(req: BoundRequest) -> ContextRule:
    """Refuse bad numbers before loading anything; return the context rule."""
    choices = {"--method": (req.method, METHODS), "--mode": (req.mode, MODES)}
    choices["--subsample-ucb"] = (req.subsample_ucb, tuple(UCBS))
    choices["--compute-dtype"] = (req.compute_dtype, COMPUTE_DTYPES)
    for option, (value, allowed) in choices.items():
        if value not in allowed:
            raise UserError(f"unknown {option} {value!r}; use one of {', '.join(allowed)}")
    if req.unit not in UNITS:
        raise UserError(f"unknown --unit {req.unit!r}; use one of {', '.join(UNITS)}")
    rule = req.context_rule()
    if req.unit != "token":
        _check_whole_units(req, rule)
    elif req.mode == "token" and rule.kind != "document":  # a sampled unit is one token of the document rule
        raise UserError("token mode uses the document context rule; use --mode block for the block rule")
    elif req.mode == "block" and rule.kind != "block":  # or one block of the block rule
        raise UserError("block mode needs the block context rule (--rule block)")
    if not 0.0 < req.delta < 1.0:
        raise UserError(f"--delta must lie in (0, 1), got {req.delta}")
    if req.mode != "exhaustive" and req.samples <= 0:
        raise UserError(f"--samples must be > 0, got {req.samples}")
    if req.mode != "exhaustive" and req.subsample_ucb == "maurer-pontil" and req.samples < 2:
        raise UserError("--subsample-ucb maurer-pontil needs --samples >= 2 (it estimates a variance)")
    if req.target_slack is not None:
        if not (req.target_slack > 0 and math.isfinite(req.target_slack)):
            raise UserError(f"--target-slack must be a positive number of bits, got {req.target_slack}")
        if req.mode == "exhaustive":
            raise UserError("--target-slack stops sampling early: it needs a sampled mode (token or block)")
        if req.subsample_ucb not in ANYTIME_UCBS:
            raise UserError(
                f"--target-slack needs an anytime-valid UCB ({', '.join(ANYTIME_UCBS)}): the {req.subsample_ucb} "
                "interval is valid at one sample size fixed in advance, not at a size chosen by looking at the draws"
            )
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
    if req.resume and req.run_dir is None:
        raise UserError("--resume needs --run-dir DIR: the directory of the run to finish")
    return rule


def _check_whole_units(req: BoundRequest, rule: ContextRule) -> None:
    """--unit document / sequence: the unit's loss must be a function of the unit alone, and the bound Hoeffding's."""
    if req.method != "lotfi":
        raise UserError(
            f"--unit {req.unit} supports --method lotfi only: eb's centring is a per-token function of the past and "
            "its proof a martingale over tokens, which bounds the token-level risk, not the mean over i.i.d. units"
        )
    if req.mode == "token":
        raise UserError(f"--mode token draws tokens; with --unit {req.unit} the sampled units are {req.unit}s")
    if req.unit == "document" and rule.kind != "document":
        raise UserError("--unit document scores each document under the document rule (drop --rule block)")
    if req.unit == "sequence" and (rule.kind != "block" or rule.stride != rule.context):
        raise UserError(
            "--unit sequence scores each aligned sequence on its own: the block rule with --stride equal to "
            "--context (a shorter stride would let a sequence's loss depend on the one before it)"
        )
    if req.target_slack is not None:
        raise UserError(f"--target-slack draws tokens or blocks in rounds; it is not offered with --unit {req.unit}")
    if req.run_dir is not None:
        raise UserError(f"--run-dir records token-level runs; it is not offered with --unit {req.unit} yet")
