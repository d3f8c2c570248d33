"""`tokenbounds study memorization`: recall of memorized random sequences against completion of held-out structured
ones as a trained GPT is quantized ever more coarsely (tokenbounds.studies.memorization).

Flags come from MemorizationStudyConfig; only the sizes are imported to build --help, torch and the runner when the
study runs.
"""

from dataclasses import dataclass, replace
from pathlib import Path

from tokenbounds.cli.study_flags import StudyFlags
from tokenbounds.config import add_flags, flag, parse_config
from tokenbounds.studies.memorization_sizes import SIZES


@dataclass(frozen=True, kw_only=True)
class MemorizationStudyConfig(StudyFlags):
    size: str = flag("default", help="how large a study", choices=tuple(SIZES))
    n_random: int | None = flag(None, help="keyed random records (memorized)", default_text="the size's")
    n_structured: int | None = flag(None, help="structured training records (inferred)", default_text="the size's")
    levels: tuple[int, ...] | None = flag(
        None, help="quantization levels, each uniform and k-means, next to float32", default_text="the size's"
    )


def add_study(studies) -> None:
    p = studies.add_parser(
        "memorization",
        help="recall of memorized random sequences vs completion of structured ones under quantization",
        description="Train a dense GPT on keyed random integer sequences (recalled only by memory) mixed with "
        "structured ones (arithmetic progressions, repeated motifs, sorted runs: a rule completes them), quantize "
        "its weights at decreasing levels (uniform and k-means), and measure at each the recall accuracy (greedy "
        "exact match of a random record's values given its key), the accuracy on held-out structured records, the "
        "bits per parameter and the token bound on the training corpus. Reports the bits per parameter at which each "
        "accuracy falls to half its float32 value. Sizes: smallest (seconds, for CI), default (under 15 minutes on a "
        "2-core AVX2 CPU), paper (a 4 x 128 GPT, not run on a CPU). Writes study.json, study.md, finding.json and "
        "plots/*.png.",
    )
    add_flags(p, MemorizationStudyConfig)
    p.set_defaults(_run=run)


def run(args) -> int:
    cfg, _ = parse_config(MemorizationStudyConfig, args)
    import torch

    from tokenbounds.models.base import cpu_has_fast_bf16
    from tokenbounds.studies.memorization import memorization_study, write_finding
    from tokenbounds.studies.runner import run_study

    size = SIZES[cfg.size]
    chosen = {k: getattr(cfg, k) for k in ("n_random", "n_structured", "levels") if getattr(cfg, k) is not None}
    study_cfg = replace(size, **chosen, bf16=cpu_has_fast_bf16())
    study = memorization_study(study_cfg, cfg.size, cfg.extra_bits)  # refuses a bad corpus before writing anything
    torch.set_num_threads(cfg.threads)
    summary = run_study(study, Path(cfg.out), resume=cfg.resume)
    finding = write_finding(summary, cfg.out)
    best = summary["best"]
    print(
        f"best of {summary['rows']} rows: {best['label']}, {best['bound']:.4f} bits/token (paid log2 "
        f"{summary['rows']} = {summary['paid_bits']:.2f} bits); wrote {cfg.out}/study.json, study.md, finding.json, "
        "plots/"
    )
    for coding, entry in finding["half_points"].items():
        print(f"{coding}: {entry['verdict']}")
    return 0
