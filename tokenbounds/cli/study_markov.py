"""`tokenbounds study markov`: k-th order Markov chains against GPTs restricted to k tokens of context.

Flags come from MarkovStudyConfig; only the sizes are imported to build --help, torch and the runner when it runs.
"""

import math
from dataclasses import dataclass, replace
from pathlib import Path

from tokenbounds.cli.study_flags import StudyFlags
from tokenbounds.config import add_flags, flag, parse_config
from tokenbounds.errors import UserError
from tokenbounds.studies.markov_sizes import MODELS, SIZES


@dataclass(frozen=True, kw_only=True)
class MarkovStudyConfig(StudyFlags):
    size: str = flag("default", help="how large a study", choices=tuple(SIZES))
    orders: tuple[int, ...] | None = flag(
        None, help="the k grid: a chain at every k, a GPT at every k >= 1", metavar="K1,K2,...", default_text="--size's"
    )
    models: tuple[str, ...] = flag(MODELS, help=f"comma-separated, of {', '.join(MODELS)}", metavar="A,B")
    data: str | None = flag(
        None, help="a shard directory from `prepare` to count and train on", metavar="DIR", default_text="the "
        "embedded Shakespeare as bytes, prepared into --out"
    )  # fmt: skip
    pseudo_count: float | None = flag(
        None, help="a of the chains' additive smoothing (n(c, y) + a / V) / (n(c) + a), fixed in advance",
        metavar="A", default_text="--size's (1)"
    )  # fmt: skip
    max_memory: float = flag(
        4.0,
        help="GiB: refuse, before any row runs, an order whose counts may need more (with the estimate)",
        metavar="GIB",
    )

    def __post_init__(self):
        super().__post_init__()
        if not (self.max_memory > 0 and math.isfinite(self.max_memory)):
            raise UserError(f"--max-memory must be a positive number of GiB, got {self.max_memory}")


def add_study(studies) -> None:
    p = studies.add_parser(
        "markov",
        help="k-th order Markov chains against GPTs restricted to k tokens of context",
        description="Bounds of k-th order Markov chains (counted from the training shards, additive smoothing fixed "
        "in advance, priced by their coded count tables) next to GPTs trained and evaluated with k tokens of context, "
        "for one k grid; context k is the document rule with L = k for both (eb, token mode, betting). Sizes: "
        "smallest (seconds, for CI), default (about 15 minutes on a 2-core AVX2 CPU), paper (12 x 768 GPTs; give "
        "--data).",
    )
    add_flags(p, MarkovStudyConfig)
    p.set_defaults(_run=run)


def run(args) -> int:
    cfg, _ = parse_config(MarkovStudyConfig, args)
    import torch

    from tokenbounds.studies.markov import markov_study
    from tokenbounds.studies.runner import run_study

    torch.set_num_threads(cfg.threads)
    study_cfg = SIZES[cfg.size]
    for name in ("orders", "pseudo_count"):
        if getattr(cfg, name) is not None:
            study_cfg = replace(study_cfg, **{name: getattr(cfg, name)})
    if cfg.data is not None:  # config.json records where the corpus is, whatever the directory it was named from
        study_cfg = replace(study_cfg, data=str(Path(cfg.data).resolve()))
    if set(cfg.models) - set(MODELS):
        raise UserError(f"--models {','.join(cfg.models)}: give some of {', '.join(MODELS)}")
    study_cfg = replace(study_cfg, models=tuple(m for m in MODELS if m in cfg.models))  # rows run in one order
    study = markov_study(study_cfg, cfg.size, int(cfg.max_memory * 2**30), cfg.extra_bits)
    summary = run_study(study, Path(cfg.out), resume=cfg.resume)
    best = summary["best"]
    by_model = {}
    for r in summary["results"]:
        kind = r["params"]["model"]
        if kind not in by_model or r["bound"]["bound"] < by_model[kind]["bound"]["bound"]:
            by_model[kind] = r
    for kind, r in by_model.items():
        bound = r["bound"]
        print(f"best {kind}: {r['label']}, {bound['bound']:.4f} bits/token (empirical {bound['empirical']:.4f})")
    print(
        f"best of {summary['rows']} rows: {best['label']}, {best['bound']:.4f} bits/token (paid log2 "
        f"{summary['rows']} = {summary['paid_bits']:.2f} bits); wrote {cfg.out}/study.json, study.md, plots/"
    )
    return 0
