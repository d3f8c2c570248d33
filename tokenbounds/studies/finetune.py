"""The fine-tuning study: one corpus's bound for a base model and for that model after fine-tuning on dialogue.

The finding tested (Lotfi et al. 2024 saw it for LLaMA-2 against LLaMA-2-chat): fine-tuning a model for dialogue
loosens its next-token bound on the pretraining corpus. Both rows are bounded on the same corpus with the same
settings; the dialogue corpus is only what the second model was fine-tuned on.

On a CPU (the default), with the embedded plays:

    base        the quickstart's model (tokenbounds.quickstart.quickstart_spec at the size's dimensions), trained on
                the plays' bytes, z coded at `levels` uniform levels: the quantized message prices it.
    fine-tuned  the same spec, training started from the base's decoded z_base, on the plays' dialogue turns in
                ChatML (tokenbounds.data.dialogue), with its own random streams of the same seed (tokenbounds.streams:
                the trainer's windows of another corpus; the bound's blocks come from the bound's own stream).

Each hypothesis is priced by its own complete description. The fine-tuned z_tuned has two:

    own      z_tuned coded at `levels` uniform levels (spec included): it decodes to z_own;
    delta    the base's message followed by delta = z_tuned - z_base coded at `levels` uniform levels
             (tokenbounds.compress.delta): it decodes to z_base + delta_hat.

The study takes the shorter (the own description on a tie) and evaluates what it decodes to; the fine-tuned model's
message is one bit saying which, then that description. That is a code fixed before any data is seen (the two
decoders and the rule are fixed; lengths decide, never a bound), so the prior charges C = 1 + min(C_own, C_base +
C_delta) bits, and nothing in the subsampling term: the choice looks at message lengths only, which do not depend on
the bound's blocks.

With a pair of checkpoints instead (`--base DIR --chat DIR --data SHARDS`: e.g. LLaMA-2 and LLaMA-2-chat on a GPU),
each is priced by its own files (`bound --checkpoint-size`: the backend's priced files under `codecs`) and both are
bounded on the given shards with the same settings. A chat checkpoint is a complete description by itself, so no
delta is offered there.

Every row is eb + block sampling + betting. The runner pays log2(2) = 1 more bit in each, so the better row may be
reported as the bound. Builders are idempotent (a finished model, quantized or delta directory is reused, a
training without a checkpoint is started again), so an interrupted row restarts cleanly.
"""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tokenbounds.compress.delta import code_delta, verify_delta_model, write_delta_model
from tokenbounds.compress.quantized_dir import load_quantized, message_path
from tokenbounds.data.bytes_tokenizer import ByteTokenizer
from tokenbounds.data.dialogue import write_dialogue_corpus
from tokenbounds.data.embedded import shakespeare_path
from tokenbounds.data.prepare import prepare
from tokenbounds.data.shards import open_corpus
from tokenbounds.data.windows import random_windows
from tokenbounds.models.groups import PARAMETRIZATIONS
from tokenbounds.models.parametrization import FREE_FILE, build_model, load_free_parameters, make_spec
from tokenbounds.quickstart import byte_gpt
from tokenbounds.streams import TRAIN_EVAL, stream
from tokenbounds.studies.building import block_bound, quantized_model, trained_model
from tokenbounds.studies.finetune_sizes import FinetuneConfig, PairConfig
from tokenbounds.studies.plots import Plot
from tokenbounds.studies.runner import Row, RowBuild, Study
from tokenbounds.train.trainer import LN2, TrainConfig

GROUP = "base-vs-finetuned"
PLOTS = (Plot(GROUP, "model", "model (both bounded on the same corpus)", kind="bar"),)
CHOICE_BITS = 1  # the fine-tuned message's first bit: own z, or the base's message plus a coded delta


def _prepared(directory: Path, source: Path) -> None:
    """`source` as byte tokens in `directory`, kept when complete (prepare writes meta.json last)."""
    if (directory / "meta.json").is_file():
        return
    if directory.exists():
        shutil.rmtree(directory)  # an interrupted prepare of this study's own
    prepare([source], ByteTokenizer(), directory, tokenizer_name="bytes", progress=False)


def _setup(cfg: FinetuneConfig):
    def setup(out: Path) -> None:
        """out/data: the plays as they are (bounded); out/dialogue: their dialogue turns in ChatML (fine-tuned on)."""
        _prepared(out / "data", shakespeare_path())
        chats = out / "dialogue.jsonl"
        if not (out / "dialogue" / "meta.json").is_file():
            counts = write_dialogue_corpus(shakespeare_path(), chats, cfg.max_turns)
            (out / "dialogue.json").write_text(json.dumps(counts, indent=1) + "\n")
            _prepared(out / "dialogue", chats)

    return setup


def study_spec(cfg: FinetuneConfig) -> dict:
    """The quickstart's model (SubLoRA over LoRA factors on attention, MLP and the tied embedding) at cfg's sizes."""
    return make_spec(
        byte_gpt(cfg),
        PARAMETRIZATIONS["sublora"],
        init_seed=cfg.seed,
        rank=cfg.lora_rank,
        subspace_dim=cfg.subspace_dim,
        subspace_seed=cfg.seed + 1,
    )


def _train_config(cfg: FinetuneConfig, steps: int, lr: float, warmup: int) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=cfg.batch_size,
        lr=lr,
        warmup=min(warmup, steps),
        eval_every=steps,
        checkpoint_every=steps,
        seed=cfg.seed,
        bf16=cfg.bf16,
    )


def _trained(out: Path, name: str, spec: dict, train_cfg: TrainConfig, data: Path, init=None, progress=False) -> dict:
    """models/NAME trained on `data` (reused when finished; a run without a checkpoint is started again)."""
    return trained_model(out / "models" / name, spec, train_cfg, data, init=init, progress=progress)


def _quantized(out: Path, source: Path, name: str, levels: int) -> tuple[Path, dict]:
    """quantized/NAME (uniform levels), written whole or not at all."""
    return quantized_model(out / "quantized" / name, source, levels=levels)


def _free_parameters(directory: Path) -> dict[str, np.ndarray]:
    """The free parameters a directory from `train` (or a delta directory) holds, as they are stored."""
    from safetensors.numpy import load_file

    return load_file(str(directory / FREE_FILE))


def _delta(out: Path, base: Path, tuned: dict[str, np.ndarray], z_base: dict[str, np.ndarray], levels: int):
    """delta/finetuned: the base's message plus tuned - z_base coded; verified against its messages every time."""
    target = out / "delta" / "finetuned"
    if not target.is_dir():
        base_message = message_path(base, json.loads((base / "quantized.json").read_text())).read_bytes()
        write_delta_model(target, base_message, code_delta(z_base, tuned, levels))
    return target, verify_delta_model(target)


def _dialogue_bits(spec: dict, free: dict[str, np.ndarray], cfg: FinetuneConfig, out: Path) -> float:
    """Mean loss in bits/token of the model with free parameters `free` on the fine-tuning run's evaluation windows
    (8 batches of the dialogue corpus, from the trainer's TRAIN_EVAL stream): what fine-tuning fitted, not a bound."""
    corpus = open_corpus(out / "dialogue")
    windows = random_windows(corpus, 8 * cfg.batch_size, cfg.context + 1, stream(cfg.seed, TRAIN_EVAL))
    model = build_model(spec)
    load_free_parameters(model, {k: torch.from_numpy(np.array(v)) for k, v in free.items()})
    model.eval()
    with torch.no_grad():
        batch = torch.from_numpy(windows)
        logits = model(batch[:, :-1]).float()
        nats = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    return float(nats) / LN2


def _base(cfg: FinetuneConfig, out: Path, progress: bool) -> tuple[Path, dict, dict]:
    """The base model, trained and quantized: (its quantized directory, manifest, training record)."""
    train_cfg = _train_config(cfg, cfg.base_steps, cfg.base_lr, cfg.base_warmup)
    trained = _trained(out, "base", study_spec(cfg), train_cfg, out / "data", progress=progress)
    target, manifest = _quantized(out, trained["dir"], "base", cfg.levels)
    return target, manifest, trained


def _base_row(cfg: FinetuneConfig, progress: bool):
    def build(out: Path) -> RowBuild:
        target, manifest, trained = _base(cfg, out, progress)
        z_base, _ = load_quantized(target)
        facts = {
            "coded_as": "own z",
            "free_parameters": manifest["n_parameters"],
            "dialogue_bits_per_token": _dialogue_bits(study_spec(cfg), z_base, cfg, out),
        }
        return RowBuild(block_bound(cfg, out, target, progress=progress), facts, {"train_seconds": trained["seconds"]})

    return Row("base", GROUP, "base", {"model": "base"}, build)


def _finetuned_row(cfg: FinetuneConfig, progress: bool):
    def build(out: Path) -> RowBuild:
        base, base_manifest, _ = _base(cfg, out, progress)
        z_base, _ = load_quantized(base)  # decoded and verified: fine-tuning starts from the base as described
        init = {k: torch.from_numpy(v.copy()) for k, v in z_base.items()}
        train_cfg = _train_config(cfg, cfg.finetune_steps, cfg.finetune_lr, cfg.finetune_warmup)
        trained = _trained(out, "finetuned", study_spec(cfg), train_cfg, out / "dialogue", init, progress)
        own, own_manifest = _quantized(out, trained["dir"], "finetuned", cfg.levels)
        tuned = _free_parameters(trained["dir"])
        delta, delta_manifest = _delta(out, base, tuned, z_base, cfg.levels)
        own_bits, delta_bits = own_manifest["message_bits"], delta_manifest["message_bits"]
        if own_bits <= delta_bits:
            model, chosen, free = own, "own z", load_quantized(own)[0]
        else:
            model, chosen, free = delta, "base + delta", _free_parameters(delta)
        facts = {
            "coded_as": chosen,
            "free_parameters": own_manifest["n_parameters"],
            "dialogue_bits_per_token": _dialogue_bits(study_spec(cfg), free, cfg, out),
            "own_z_bits": own_bits,
            "base_bits": base_manifest["message_bits"],
            "delta_bits": delta_manifest["delta_bits"],
            "choice_bits": CHOICE_BITS,
        }
        request = block_bound(cfg, out, model, message_bits=CHOICE_BITS + min(own_bits, delta_bits), progress=progress)
        return RowBuild(request, facts, {"train_seconds": trained["seconds"]})

    return Row("finetuned", GROUP, "fine-tuned", {"model": "fine-tuned"}, build)


def _pair_rows(pair: PairConfig, progress: bool) -> list[Row]:
    def build(path: str):
        def row(out: Path) -> RowBuild:
            request = block_bound(
                pair,
                out,
                path,
                data=pair.data,
                checkpoint_size=True,
                codecs=pair.codecs,
                compute_dtype=pair.compute_dtype,
                device=pair.device,
                batch_tokens=pair.batch_tokens,
                progress=progress,
            )
            return RowBuild(request, {"checkpoint": path})

        return row

    return [
        Row("base", GROUP, "base", {"model": "base"}, build(pair.base)),
        Row("chat", GROUP, "chat", {"model": "chat"}, build(pair.chat)),
    ]


def finetune_study(cfg: FinetuneConfig, size: str, extra_bits: float = 0.0, progress: bool = False) -> Study:
    """The CPU study at `size`: the base model and its dialogue fine-tuning, on the embedded plays."""
    rows = [_base_row(cfg, progress), _finetuned_row(cfg, progress)]
    config = {"models": "embedded", "size": size, **asdict(cfg)}
    return Study("finetune", config, rows, extra_bits=extra_bits, setup=_setup(cfg), plots=PLOTS)


def pair_study(pair: PairConfig, extra_bits: float = 0.0, progress: bool = False) -> Study:
    """The study of a base / chat pair of checkpoints, each priced by its own files, on the same shards."""
    config = {"models": "pair", **asdict(pair)}
    return Study("finetune", config, _pair_rows(pair, progress), extra_bits=extra_bits, plots=PLOTS)
