"""`tokenbounds study NAME`: run a study (a grid of bounds, resumable row by row) into a new directory.

Flags come from CompressionStudyConfig; only the sizes' names are imported to build --help, torch and the runner
when a study runs.
"""

import importlib
from dataclasses import dataclass, replace
from pathlib import Path

from tokenbounds.cli.study_flags import StudyFlags
from tokenbounds.config import add_flags, flag, parse_config
from tokenbounds.errors import UserError
from tokenbounds.studies.compression_sizes import SIZES, SUB_STUDIES

# Every other study is one module under tokenbounds.cli with `add_study(studies)` (its sub-parser, flags and run);
# adding a study is one file and one name here. Listed in the order --help shows them.
STUDY_MODULES: tuple[str, ...] = ("study_markov", "study_memorization", "study_finetune")


@dataclass(frozen=True, kw_only=True)
class CompressionStudyConfig(StudyFlags):
    size: str = flag("default", help="how large a study", choices=tuple(SIZES))
    # Not a choices flag: an unknown name is a UserError (one line), and the rows run in SUB_STUDIES order.
    studies: tuple[str, ...] = flag(
        SUB_STUDIES, help=f"comma-separated sub-studies to run, of {', '.join(SUB_STUDIES)}", metavar="A,B,..."
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.studies or set(self.studies) - set(SUB_STUDIES):
            raise UserError(f"--studies {','.join(self.studies)!r}: give some of {', '.join(SUB_STUDIES)}")


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
    add_flags(c, CompressionStudyConfig)
    c.set_defaults(_run=run)
    for name in STUDY_MODULES:
        importlib.import_module(f"tokenbounds.cli.{name}").add_study(studies)
    return p


def run(args) -> int:
    cfg, _ = parse_config(CompressionStudyConfig, args)
    import torch

    from tokenbounds.models.base import cpu_has_fast_bf16
    from tokenbounds.studies.compression import compression_study
    from tokenbounds.studies.runner import run_study

    studies = tuple(s for s in SUB_STUDIES if s in cfg.studies)  # rows run in one order, however they are named
    torch.set_num_threads(cfg.threads)
    # config.json records the study's configuration (size, sub-studies, extra bits), not where or how fast it ran
    study_cfg = replace(SIZES[cfg.size], studies=studies, bf16=cpu_has_fast_bf16())
    summary = run_study(compression_study(study_cfg, cfg.size, cfg.extra_bits), Path(cfg.out), resume=cfg.resume)
    best = summary["best"]
    print(
        f"best of {summary['rows']} rows: {best['label']}, {best['bound']:.4f} bits/token (paid log2 "
        f"{summary['rows']} = {summary['paid_bits']:.2f} bits); wrote {cfg.out}/study.json, study.md, plots/"
    )
    return 0
