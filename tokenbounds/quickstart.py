"""`quickstart`: the whole pipeline on the embedded corpus, on a CPU, ending in a non-vacuous bound.

1. prepare: the embedded Shakespeare corpus (42 works, 4.9 MB) -> byte-level tokens (V = 257, eot = 256). The
   byte tokenizer depends on no data, so it costs nothing in the prior.
2. train: a small GPT in SubLoRA form: LoRA factors on attention, MLP and the (tied) embedding plus the norm gains,
   all of them theta_0 + P z with P a seeded Kronecker projection; only z (d numbers) is trained.
3. quantize: z -> a codebook of `levels` float16 values, arithmetic-coded with its empirical frequencies; the
   message (spec + codebook + frequencies + coded symbols) is the prior's C, in bits.
4. bound: the decoded model, evaluated on the training corpus, by the entropy-centred empirical-Bernstein bound
   with block sampling and the betting confidence bound (all bounds hold together with probability >= 1 - delta).

One `seed` drives every step, but each random stream (training windows, evaluation windows, dropout, the bound's
blocks) is derived from it with its own purpose tag (tokenbounds.streams): the blocks the bound draws are
independent of the windows the model was trained on, as the bound requires.

The settings (tokenbounds.quickstart_config) were chosen by the developers after trying a handful of configurations
on this same corpus, so the bound pays for that choice: `extra_bits` = log2 16 covers up to 16 configurations tried.
"""

import time
from dataclasses import asdict
from pathlib import Path

from tokenbounds.compress.model import quantize_model
from tokenbounds.data.bytes_tokenizer import ByteTokenizer
from tokenbounds.data.embedded import shakespeare_path
from tokenbounds.data.prepare import prepare
from tokenbounds.data.shards import open_corpus
from tokenbounds.models.base import cpu_has_fast_bf16
from tokenbounds.models.gpt import GPTConfig
from tokenbounds.models.groups import PARAMETRIZATIONS
from tokenbounds.models.parametrization import make_spec
from tokenbounds.pipeline import BoundRequest, compute_bound
from tokenbounds.quickstart_config import QuickstartConfig
from tokenbounds.streams import check_seed
from tokenbounds.train.config import TrainConfig
from tokenbounds.train.trainer import random_streams, train


def byte_gpt(sizes) -> GPTConfig:
    """A GPT over byte tokens at the sizes `sizes` names (context, n_layer, n_head, n_embd), without dropout."""
    return GPTConfig(
        vocab_size=len(ByteTokenizer()),
        context=sizes.context,
        n_layer=sizes.n_layer,
        n_head=sizes.n_head,
        n_embd=sizes.n_embd,
        dropout=0.0,
    )


def quickstart_spec(cfg: QuickstartConfig) -> dict:
    """The model the quickstart trains: `train --param sublora` (tokenbounds.models.parametrization) at cfg's sizes."""
    arch = byte_gpt(cfg)
    return make_spec(
        arch,
        PARAMETRIZATIONS["sublora"],
        init_seed=cfg.seed,
        rank=cfg.lora_rank,
        subspace_dim=cfg.subspace_dim,
        subspace_seed=cfg.seed + 1,
    )


def run_quickstart(out: Path, cfg: QuickstartConfig, log=print) -> dict:
    """Run the four steps into `out` (a new directory) and return the bound report with a `quickstart` section."""
    progress = cfg.progress
    check_seed(cfg.seed)  # before the corpus is prepared
    timings = {}
    started = time.perf_counter()

    log("1/4 prepare: embedded Shakespeare -> byte-level tokens")
    data = out / "data"
    prepare([shakespeare_path()], ByteTokenizer(), data, tokenizer_name="bytes", progress=progress)
    corpus = open_corpus(data)
    timings["prepare_seconds"] = time.perf_counter() - started

    log("2/4 train: SubLoRA GPT")
    spec = quickstart_spec(cfg)
    train_cfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup=cfg.warmup,
        eval_every=max(cfg.steps // 5, 1),
        checkpoint_every=cfg.steps,
        seed=cfg.seed,
        bf16=cpu_has_fast_bf16(),  # autocast for training only: z, the message and the bound stay float32
    )
    t = time.perf_counter()
    trained = train(spec, train_cfg, corpus, out / "model", progress=progress, log=log)
    timings["train_seconds"] = time.perf_counter() - t

    log(f"3/4 quantize: z -> {cfg.levels} levels, arithmetic-coded")
    t = time.perf_counter()
    manifest = quantize_model(out / "model", out / "quantized", levels=cfg.levels, progress=progress)
    timings["quantize_seconds"] = time.perf_counter() - t
    log(f"message: {manifest['message_bits']:,} bits ({manifest['bits_per_parameter']:.2f} bits per free parameter)")

    log("4/4 bound: eb + block + betting on the decoded model")
    t = time.perf_counter()
    report = compute_bound(
        BoundRequest(
            model=str(out / "quantized"),
            data=str(data),
            method="eb",
            mode="block",
            subsample_ucb="betting",  # explicit: the quickstart's figures are this bound's, whatever the defaults
            samples=cfg.samples,
            context=cfg.context,
            stride=cfg.stride,
            delta=cfg.delta,
            extra_bits=cfg.extra_bits,
            seed=cfg.seed,
            progress=progress,
        )
    )
    timings["bound_seconds"] = time.perf_counter() - t
    timings["total_seconds"] = time.perf_counter() - started
    report["quickstart"] = {
        "config": asdict(cfg),
        "out": str(out),
        "train": {
            "steps": trained.step,
            "tokens": trained.tokens,
            "seconds": trained.seconds,
            "train_loss_nats": trained.train_loss,
            "random_streams": random_streams(train_cfg.seed),
        },
        "quantized": {k: manifest[k] for k in ("message_bits", "levels", "n_parameters", "bits_per_parameter")},
        "timings": timings,
    }
    return report
