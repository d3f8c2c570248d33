"""`tokenbounds bound`: token-level generalization bounds for a language model on its training corpus."""

import argparse

from tokenbounds.pipeline import DEFAULT_ALPHAS, DEFAULT_KS, METHODS, MODES, BoundRequest, compute_bound
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
        "alpha) and as top-k error rates. All reported bounds hold together with probability >= 1 - delta.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="PATH", help="a Hugging Face model directory or a .gguf file")
    p.add_argument(
        "--data", required=True, metavar="PATH", help="a shard directory from `prepare`, or a raw nanoGPT .bin file"
    )
    p.add_argument("--dtype", choices=["uint16", "uint32"], help="token dtype of a raw .bin file")
    p.add_argument("--eot", type=int, metavar="ID", help="end-of-text id of a raw .bin file (document separator)")
    p.add_argument("--method", default="lotfi", choices=METHODS, help="lotfi: the paper's Azuma + Hoeffding bound")
    p.add_argument(
        "--mode",
        default="token",
        choices=MODES,
        help="token: score s positions drawn uniformly with replacement (the paper's); exhaustive: score every "
        "token (exact empirical risk, no subsampling term; for small corpora)",
    )
    p.add_argument("--samples", type=int, default=10_000, metavar="S", help="number of sampled units s (token mode)")
    p.add_argument(
        "--context",
        type=int,
        default=1024,
        metavar="L",
        help="context length: each token sees the previous <= L tokens, starting at the most recent end-of-text token",
    )
    p.add_argument("--delta", type=float, default=0.05, help="failure probability shared by all reported bounds")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsampling (fresh randomness, after h is fixed)")
    prior = p.add_mutually_exclusive_group(required=True)
    prior.add_argument(
        "--message-bits", type=float, metavar="N", help="length in bits of the model's description (the prior)"
    )
    prior.add_argument(
        "--checkpoint-size",
        action="store_true",
        help="price the model by its compressed checkpoint size (the paper's gzip / tar.gz recipe, and better codecs)",
    )
    p.add_argument(
        "--extra-bits",
        type=float,
        default=0.0,
        metavar="B",
        help="bits paid for choices made after seeing the data: log2 of the number of options tried",
    )
    p.add_argument("--alphas", type=_floats, default=DEFAULT_ALPHAS, metavar="A1,A2,...", help="smoothing weights")
    p.add_argument("--topk", type=_ints, default=DEFAULT_KS, metavar="K1,K2,...", help="k values for top-k error")
    p.add_argument(
        "--compute-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="dtype of the forward pass; part of the hypothesis (log-softmax is always float32)",
    )
    p.add_argument("--batch-tokens", type=int, default=8192, metavar="N", help="padded tokens per forward batch")
    p.add_argument("--json", metavar="OUT", help="write the JSON report here")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def run(args) -> int:
    check_writable(args.json, args.force)
    request = BoundRequest(
        model=args.model,
        data=args.data,
        dtype=args.dtype,
        eot=args.eot,
        method=args.method,
        mode=args.mode,
        samples=args.samples,
        context=args.context,
        delta=args.delta,
        seed=args.seed,
        message_bits=args.message_bits,
        checkpoint_size=args.checkpoint_size,
        extra_bits=args.extra_bits,
        alphas=args.alphas,
        ks=args.topk,
        compute_dtype=args.compute_dtype,
        batch_tokens=args.batch_tokens,
        progress=not args.no_progress,
    )
    report = compute_bound(request)
    print(format_bound_table(report))
    if args.json:
        write_json(args.json, report)
        print(f"report written to {args.json}")
    return 0
