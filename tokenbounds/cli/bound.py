"""`tokenbounds bound`: token-level generalization bounds for a language model on its training corpus."""

import argparse

import numpy as np

from tokenbounds.errors import UserError
from tokenbounds.pipeline import (
    DEFAULT_ALPHAS,
    DEFAULT_KS,
    DEFAULT_METHOD,
    DEFAULT_MODE,
    DEFAULT_UCB,
    METHODS,
    MODES,
    PAPER,
    RULES,
    UCB_NAMES,
    BoundRequest,
    compute_bound_with_units,
)
from tokenbounds.report.io import check_writable, write_json
from tokenbounds.report.table import format_bound_table


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None


def add_parser(sub):
    p = sub.add_parser(
        "bound",
        help="bound a model's next-token risk on the process its training corpus came from",
        description="Token-level generalization bounds (Lotfi et al. 2024): an upper bound on the model's expected "
        "next-token loss under the data-generating process, conditional on the past, averaged over the m tokens of "
        "the training corpus, in bits per token (for the prediction smoothed with the uniform distribution at each "
        "alpha) and as top-k error rates. All reported bounds hold together with probability >= 1 - delta. "
        f"Default: the tightest valid configuration, --method {DEFAULT_METHOD} --mode {DEFAULT_MODE} (block context "
        f"rule, --stride = --context) --subsample-ucb {DEFAULT_UCB}; --paper gives the paper's (lotfi, token, "
        "hoeffding; document context rule).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="PATH",
        help="a Hugging Face model directory, a .gguf file, a directory from `tokenbounds quantize` or `train`, or a "
        "QuIP# checkpoint directory (with --quip-sharp)",
    )
    p.add_argument(
        "--data", required=True, metavar="PATH", help="a shard directory from `prepare`, or a raw nanoGPT .bin file"
    )
    p.add_argument("--dtype", choices=["uint16", "uint32"], help="token dtype of a raw .bin file")
    p.add_argument("--eot", type=int, metavar="ID", help="end-of-text id of a raw .bin file (document separator)")
    p.add_argument(
        "--method",
        default=argparse.SUPPRESS,  # resolved in _configuration (the default, or --paper's); help states it
        choices=METHODS,
        help="lotfi: the paper's Azuma-Hoeffding martingale bound (pays the full loss range); eb: the "
        "entropy-centred empirical-Bernstein martingale bound (pays the spread of the loss around the model's "
        f"own entropy; same guarantee, usually several times tighter). Default: {DEFAULT_METHOD}",
    )
    p.add_argument(
        "--mode",
        default=argparse.SUPPRESS,
        choices=MODES,
        help="token: score s positions drawn uniformly with replacement, one forward pass each (the paper's); "
        "block: draw s aligned blocks in proportion to their length and score all their tokens in one forward "
        "pass (unit = block mean); exhaustive: score every token (exact empirical risk, no subsampling term). "
        f"Default: {DEFAULT_MODE}",
    )
    p.add_argument(
        "--rule",
        choices=RULES,
        help="context rule of the hypothesis: document (previous <= L tokens since the last eot; token and "
        "exhaustive modes) or block (context resets at aligned blocks; block mode, and exhaustive). "
        "Default: block for block mode, document otherwise",
    )
    p.add_argument("--samples", type=int, default=10_000, metavar="S", help="sampled units s: tokens or blocks")
    p.add_argument(
        "--stride",
        type=int,
        metavar="S",
        help="block rule: length of the scored blocks, a divisor of --context; each block is scored after the "
        "context - S tokens before it, so every token has >= context - S tokens of context (default: --context)",
    )
    p.add_argument(
        "--context",
        type=int,
        default=1024,
        metavar="L",
        help="context length: each token sees the previous <= L tokens, starting at the most recent end-of-text token",
    )
    p.add_argument("--delta", type=float, default=0.05, help="failure probability shared by all reported bounds")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsampling (fresh randomness, after h is fixed)")
    prior = p.add_mutually_exclusive_group()
    prior.add_argument(
        "--message-bits", type=float, metavar="N", help="length in bits of the model's description (the prior)"
    )
    prior.add_argument(
        "--checkpoint-size",
        action="store_true",
        help="price the model by its compressed checkpoint size: the paper's recipe (gzip -c of one file, tar -czf of "
        "several, with the architecture config), or the best of --codecs. A directory written by `tokenbounds "
        "quantize` prices itself by its coded message (verified against its weights) when no prior is given",
    )
    p.add_argument(
        "--codecs",
        type=lambda text: tuple(c.strip() for c in text.split(",") if c.strip()),
        default=("gzip",),
        metavar="C1,C2,...",
        help="--checkpoint-size: codecs to try (gzip, xz, zstd, brotli, or NAME:LEVEL); the shortest is kept and "
        "log2(number tried) extra bits are paid",
    )
    p.add_argument(
        "--extra-bits",
        type=float,
        default=0.0,
        metavar="B",
        help="bits paid for choices made after seeing the data: log2 of the number of options tried",
    )
    p.add_argument(
        "--subsample-ucb",
        default=argparse.SUPPRESS,
        choices=UCB_NAMES,
        help="upper confidence bound for the subsampled empirical risk: hoeffding (the paper's), maurer-pontil "
        f"(empirical Bernstein), betting (Waudby-Smith & Ramdas 2024). Default: {DEFAULT_UCB}",
    )
    p.add_argument(
        "--lambdas",
        type=_floats,
        metavar="L1,L2,...",
        help="eb: the lambda grid in (0, 1), fixed in advance (default: 42 values from 1e-4 to 0.9, uniform in "
        "logit, so rounding to the grid costs < 1%%)",
    )
    p.add_argument("--alphas", type=_floats, default=DEFAULT_ALPHAS, metavar="A1,A2,...", help="smoothing weights")
    p.add_argument("--topk", type=_ints, default=DEFAULT_KS, metavar="K1,K2,...", help="k values for top-k error")
    p.add_argument(
        "--compute-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="dtype of the forward pass; part of the hypothesis (log-softmax is always float32)",
    )
    p.add_argument("--device", default="cpu", help="torch device for the forward passes: cpu, cuda, cuda:N")
    p.add_argument(
        "--quip-sharp",
        metavar="DIR",
        help="QuIP# checkpoints: a quip-sharp checkout (kernels built) that decodes and runs the model in a worker "
        "process; use --device cuda (or auto: spread over GPUs)",
    )
    p.add_argument(
        "--quip-python",
        metavar="PYTHON",
        help="the Python interpreter of quip-sharp's environment (it pins torch 2.1 / transformers 4.34); "
        "default: this one",
    )
    p.add_argument("--batch-tokens", type=int, default=8192, metavar="N", help="padded tokens per forward batch")
    p.add_argument(
        "--paper",
        action="store_true",
        help="the paper's configuration exactly: --method lotfi --mode token --subsample-ucb hoeffding",
    )
    p.add_argument("--json", metavar="OUT", help="write the JSON report here")
    p.add_argument(
        "--units-out",
        metavar="FILE.npz",
        help="sampled modes: write every row's per-unit values (unit loss, and for eb the unit mean square), in "
        "sampling order, so each row can be recomputed",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing --json / --units-out file")
    p.add_argument(
        "--verify-data",
        action="store_true",
        help="before scoring, re-hash every shard against prepare's sha256 and check every token id against V (one "
        "full read of the corpus; without it every token that is scored is checked, and the report says so)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _configuration(args) -> dict:
    """method, mode and subsample_ucb: the defaults, or --paper's (refused if an explicit flag contradicts it)."""
    given = {key: getattr(args, key, None) for key in ("method", "mode", "subsample_ucb")}
    if args.paper:
        for key, value in given.items():
            if value is not None and value != PAPER[key]:
                flag = "--" + key.replace("_", "-")
                raise UserError(f"--paper means {flag} {PAPER[key]}; it contradicts {flag} {value}")
        return dict(PAPER)
    defaults = {"method": DEFAULT_METHOD, "mode": DEFAULT_MODE, "subsample_ucb": DEFAULT_UCB}
    return {key: defaults[key] if value is None else value for key, value in given.items()}


def run(args) -> int:
    check_writable(args.json, args.force)
    check_writable(args.units_out, args.force)
    config = _configuration(args)
    if args.units_out and config["mode"] == "exhaustive":
        raise UserError("--units-out writes sampled units; exhaustive mode samples none")
    request = BoundRequest(
        model=args.model,
        data=args.data,
        dtype=args.dtype,
        eot=args.eot,
        method=config["method"],
        mode=config["mode"],
        rule=args.rule,
        samples=args.samples,
        context=args.context,
        stride=args.stride,
        delta=args.delta,
        seed=args.seed,
        message_bits=args.message_bits,
        checkpoint_size=args.checkpoint_size,
        codecs=args.codecs,
        extra_bits=args.extra_bits,
        alphas=args.alphas,
        ks=args.topk,
        lambdas=args.lambdas,
        subsample_ucb=config["subsample_ucb"],
        compute_dtype=args.compute_dtype,
        device=args.device,
        quip_sharp=args.quip_sharp,
        quip_python=args.quip_python,
        batch_tokens=args.batch_tokens,
        verify_data=args.verify_data,
        progress=not args.no_progress,
    )
    report, units = compute_bound_with_units(request)
    print(format_bound_table(report))
    if args.json:
        write_json(args.json, report)
        print(f"report written to {args.json}")
    if args.units_out:
        with open(args.units_out, "wb") as f:  # a file object: np.savez must not append ".npz" to the name
            np.savez(f, **units)
        print(f"per-unit values written to {args.units_out}")
    return 0
