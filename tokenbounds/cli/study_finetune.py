"""`tokenbounds study finetune`: one corpus's bound for a base model and for it after fine-tuning on dialogue.

Without --base / --chat: the CPU study on the embedded plays at --size (the quickstart's model, fine-tuned on the
plays' dialogue turns in ChatML). With them: the two checkpoints the user names, each priced by its own files, bounded
on --data with the same settings. Flags come from FinetuneStudyConfig; torch and the study load when it runs.
"""

from dataclasses import dataclass, replace
from pathlib import Path

from tokenbounds.cli.study_flags import StudyFlags
from tokenbounds.config import add_flags, flag, parse_config
from tokenbounds.errors import UserError
from tokenbounds.studies.finetune_sizes import SIZES, PairConfig

PAIR = "a base / chat pair (--base, --chat)"
PAIR_ONLY = ("data", "context", "stride", "samples", "codecs", "compute_dtype", "device", "batch_tokens")


@dataclass(frozen=True, kw_only=True)
class FinetuneStudyConfig(StudyFlags):
    size: str = flag("default", help="how large the CPU study (without --base / --chat)", choices=tuple(SIZES))
    base: str | None = flag(
        None, help="a base checkpoint (Hugging Face directory or .gguf)", metavar="PATH", default_text="the CPU study"
    )
    chat: str | None = flag(
        None, help="the same model fine-tuned for dialogue (e.g. LLaMA-2-chat)", metavar="PATH", default_text="none"
    )
    data: str | None = flag(
        None,
        help="token shards of the pretraining-like corpus both are bounded on",
        metavar="PATH",
        group=PAIR,
        default_text="none: required with --base",
    )
    context: int = flag(PairConfig.context, help="context length L", metavar="L", group=PAIR)
    stride: int = flag(PairConfig.stride, help="scored block length, a divisor of --context", metavar="S", group=PAIR)
    samples: int = flag(PairConfig.samples, help="blocks drawn per bound", metavar="S", group=PAIR)
    codecs: tuple[str, ...] = flag(
        PairConfig.codecs, help="codecs pricing each checkpoint's files (the shortest is kept and paid for)",
        metavar="C1,C2,...", group=PAIR,
    )  # fmt: skip
    compute_dtype: str = flag(
        PairConfig.compute_dtype, help="forward dtype, as `bound --compute-dtype`", group=PAIR,
        choices=("auto", "float32", "bfloat16"),
    )  # fmt: skip
    device: str = flag(PairConfig.device, help="torch device of the forward passes: cpu, cuda, cuda:N", group=PAIR)
    batch_tokens: int = flag(PairConfig.batch_tokens, help="padded tokens per forward batch", metavar="N", group=PAIR)
    progress: bool = flag(True, help="hide progress bars", name="--no-progress")

    def pair(self, given: set[str]) -> PairConfig | None:
        """The checkpoint pair asked for, or None for the CPU study; UserError on flags of the other kind."""
        if self.base is None and self.chat is None:
            typed = [f"--{name.replace('_', '-')}" for name in PAIR_ONLY if name in given]
            if typed:
                raise UserError(f"{', '.join(typed)}: only for a pair of checkpoints (--base and --chat)")
            return None
        if self.base is None or self.chat is None or self.data is None:
            raise UserError("a pair of checkpoints needs --base, --chat and --data (the shards both are bounded on)")
        if "size" in given:
            raise UserError("--size is the CPU study's; a pair of checkpoints is bounded at --samples and --context")
        if Path(self.base).resolve() == Path(self.chat).resolve():
            raise UserError(f"--base and --chat are the same checkpoint ({self.base})")
        return PairConfig(
            base=self.base, chat=self.chat, data=self.data, context=self.context, stride=self.stride,
            samples=self.samples, codecs=self.codecs, compute_dtype=self.compute_dtype, device=self.device,
            batch_tokens=self.batch_tokens,
        )  # fmt: skip


def add_study(studies) -> None:
    p = studies.add_parser(
        "finetune",
        help="a base model's bound against the bound of the same model fine-tuned on dialogue",
        description="Bound one corpus for a base model and for that model after supervised fine-tuning on "
        "dialogue. CPU (default): the quickstart's model trained on the embedded plays, then fine-tuned on their "
        "dialogue turns in a ChatML template; the fine-tuned model pays for its own z or for the base's message plus "
        "a coded delta, whichever is shorter, plus 1 bit saying which. With --base, --chat and --data: two "
        "checkpoints (e.g. LLaMA-2 and LLaMA-2-chat), each priced by its own files, bounded on the same shards. "
        "Sizes: smallest (seconds, for CI), default (minutes on a 2-core AVX2 CPU).",
    )
    add_flags(p, FinetuneStudyConfig)
    p.set_defaults(_run=run)


def run(args) -> int:
    cfg, given = parse_config(FinetuneStudyConfig, args)
    pair = cfg.pair(given)
    import torch

    from tokenbounds.models.base import cpu_has_fast_bf16
    from tokenbounds.studies.finetune import finetune_study, pair_study
    from tokenbounds.studies.runner import run_study

    torch.set_num_threads(cfg.threads)
    if pair is None:
        sizes = replace(SIZES[cfg.size], bf16=cpu_has_fast_bf16())
        study = finetune_study(sizes, cfg.size, cfg.extra_bits, progress=cfg.progress)
    else:
        study = pair_study(pair, cfg.extra_bits, progress=cfg.progress)
    summary = run_study(study, Path(cfg.out), resume=cfg.resume)
    rows = {r["key"]: r for r in summary["results"]}
    tuned = rows.get("finetuned") or rows["chat"]
    base, after = rows["base"]["bound"], tuned["bound"]
    print(
        f"base {base['bound']:.4f} bits/token (empirical {base['empirical']:.4f}), {tuned['label']} "
        f"{after['bound']:.4f} (empirical {after['empirical']:.4f}): fine-tuning "
        f"{'loosened' if after['bound'] > base['bound'] else 'did not loosen'} the bound by "
        f"{after['bound'] - base['bound']:+.4f} bits/token (each row paid log2 {summary['rows']} = "
        f"{summary['paid_bits']:.2f} bits); wrote {cfg.out}/study.json, study.md, plots/"
    )
    return 0
