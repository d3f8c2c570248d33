"""`tokenbounds study NAME`: run a study (a grid of bounds, resumable row by row) into a new directory.

Only the sizes' names are imported to build --help; torch and the runner are imported when a study runs.
"""

from dataclasses import replace
from pathlib import Path

from tokenbounds.errors import UserError
from tokenbounds.studies.compression_sizes import SIZES, SUB_STUDIES


def add_parser(sub):
    p = sub.add_parser(
        "study",
        help="run a study: a grid of bounds of trained GPTs, resumable, with a table and plots",
        description="Run a study into a new directory: every row trains and compresses a hypothesis, bounds it "
        "(eb, block sampling, betting), and is written as soon as it is done, so --resume continues where an "
        "interrupted run stopped. Every row's bound pays log2(rows) extra bits, so the best row may be reported as "
        "the bound. Writes study.json, study.md and plots/*.png.",
    )
    studies = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    c = studies.add_parser(
        "compression",
        help="bounds against training time, subspace dimension, parametrization and quantization levels",
        description="Bounds of GPTs trained on the embedded Shakespeare bytes against training time (one SubLoRA "
        "schedule bounded at its checkpoints), the subspace dimension d, the parametrization (lora, sublora, "
        "kronecker, monarch) and the quantization levels of z (uniform and k-means, next to float32 z priced by "
        "tar -czf). Sizes: smallest (seconds, for CI), default (about 15 minutes on a 2-core AVX2 CPU), paper "
        "(README's figures: 4 x 128 GPT, 2,000-step schedule, 2,000 blocks per bound).",
    )
    c.add_argument("--out", required=True, metavar="DIR", help="new run directory (or the one to --resume)")
    c.add_argument("--resume", action="store_true", help="finish the study in --out, skipping its finished rows")
    c.add_argument("--size", choices=tuple(SIZES), default="default", help="how large a study (default: default)")
    c.add_argument(
        "--studies",
        default=",".join(SUB_STUDIES),
        help=f"comma-separated sub-studies to run, of {', '.join(SUB_STUDIES)} (default: all)",
    )
    c.add_argument(
        "--extra-bits",
        type=float,
        default=0.0,
        help="bits for choices of yours made after seeing this corpus; log2(rows) is added on top",
    )
    c.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: the study is bit-identical "
                   "when resumed with the same count)")  # fmt: skip
    c.set_defaults(_run=run)
    return p


def run(args) -> int:
    import torch

    from tokenbounds.studies.compression import compression_study
    from tokenbounds.studies.runner import run_study
    from tokenbounds.train.trainer import cpu_has_fast_bf16

    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    if not args.extra_bits >= 0:
        raise UserError(f"--extra-bits must be >= 0, got {args.extra_bits}")
    named = {s.strip() for s in args.studies.split(",") if s.strip()}
    if not named or named - set(SUB_STUDIES):
        raise UserError(f"--studies {args.studies!r}: give some of {', '.join(SUB_STUDIES)}")
    studies = tuple(s for s in SUB_STUDIES if s in named)  # rows run in one order, however they are named
    torch.set_num_threads(args.threads)
    cfg = replace(SIZES[args.size], studies=studies, bf16=cpu_has_fast_bf16())
    summary = run_study(compression_study(cfg, args.size, args.extra_bits), Path(args.out), resume=args.resume)
    best = summary["best"]
    print(
        f"best of {summary['rows']} rows: {best['label']}, {best['bound']:.4f} bits/token (paid log2 "
        f"{summary['rows']} = {summary['paid_bits']:.2f} bits); wrote {args.out}/study.json, study.md, plots/"
    )
    return 0
