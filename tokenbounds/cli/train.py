"""`tokenbounds train`: train a small GPT in a compressed parametrization on token shards.

Flags come from TrainRun (the model's and the trainer's configs are sections of it); torch is imported in `run`.
"""

import argparse
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from tokenbounds.config import add_flags, flag, parse_config, section
from tokenbounds.errors import UserError
from tokenbounds.train.config import ModelConfig, TrainConfig


@dataclass(frozen=True, kw_only=True)
class TrainRun:
    data: str = flag(help="training shards: a directory with meta.json, or a raw .bin file", metavar="SHARDS")
    val: str | None = flag(
        None, help="held-out shards for the periodic evaluation", metavar="SHARDS", default_text="windows of --data"
    )
    dtype: str | None = flag(
        None, help="token dtype of a raw .bin file", choices=("uint16", "uint32"), default_text="meta.json's"
    )
    eot: int | None = flag(None, help="end-of-text id of a raw .bin file", metavar="ID", default_text="meta.json's")
    out: str = flag(help="output directory; must be new or empty unless --resume", metavar="DIR")
    resume: bool = flag(
        False,
        help="continue the run saved in --out (flags not given are taken from it; flags given must agree with it)",
    )
    model: ModelConfig = section(ModelConfig)
    training: TrainConfig = section(TrainConfig)
    threads: int | None = flag(None, help="torch CPU threads", default_text="torch's choice")
    progress: bool = flag(True, help="no progress bar", name="--no-progress")

    def __post_init__(self):
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be >= 1, got {self.threads}")

    def settings(self) -> dict:
        """What train_state.json records as the run's settings: everything that decides the spec and the config."""
        return {**asdict(self.model), **asdict(self.training)}

    def with_settings(self, values: dict) -> "TrainRun":
        def pick(cls):
            return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

        return replace(self, model=pick(ModelConfig), training=pick(TrainConfig))


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a small GPT (dense, LoRA, SubLoRA, Kronecker or Monarch) on token shards",
        description="Train the free parameters of a small GPT on token shards. The output directory holds spec.json "
        "(architecture, parametrization, seeds) and free_parameters.safetensors (the trained numbers only), which "
        "is what quantization codes and `bound` rebuilds the model from, plus a resumable checkpoint.",
    )
    return add_flags(p, TrainRun)


def run(args) -> int:
    cfg, given = parse_config(TrainRun, args)
    import torch

    from tokenbounds.data.shards import open_corpus
    from tokenbounds.train.trainer import read_checkpoint_state, train

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    corpus = open_corpus(cfg.data, cfg.dtype, cfg.eot)
    val = open_corpus(cfg.val, cfg.dtype, cfg.eot) if cfg.val else None
    corpus_vocab = corpus.vocab_size if corpus.vocab_size is not None else corpus.scan_max_id() + 1
    out = Path(cfg.out)
    if cfg.resume:
        # Given flags win, the others come from the checkpoint; a contradiction surfaces as a spec/config mismatch.
        saved = read_checkpoint_state(out).get("settings", {})
        cfg = cfg.with_settings({**saved, **{k: v for k, v in cfg.settings().items() if k in given}})
    spec = cfg.model.spec(corpus_vocab)
    print(f"model spec: {json.dumps(spec, separators=(',', ':'))}")
    result = train(
        spec,
        cfg.training,
        corpus,
        out,
        val_corpus=val,
        resume=cfg.resume,
        progress=cfg.progress,
        extra_state={"settings": cfg.settings()},  # lets --resume rebuild the same spec and config from the directory
    )
    where = "held-out loss" if val is not None else "loss on training windows (no --val)"
    loss = "n/a" if result.val_loss is None else f"{result.val_loss / math.log(2):.4f} bits/token"
    print(
        f"trained {result.step} steps, {result.tokens:,} tokens in {result.seconds:.1f} s "
        f"({result.tokens / max(result.seconds, 1e-9):,.0f} tokens/s); {where} {loss}; wrote {out}"
    )
    return 0
