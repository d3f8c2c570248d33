"""Train the free parameters of a GPT spec on token shards: AdamW, warmup + cosine, accumulation, checkpoints.

Output directory (a checkpoint is always complete: every file is written to a temporary name, then renamed):
  spec.json                      the hypothesis' spec (architecture, parametrization, seeds)
  free_parameters.safetensors    the trained free parameters only (what quantization codes and `bound` loads)
  optimizer.pt                   AdamW state and the torch RNG state (tensors only: loads with weights_only=True)
  train_state.json               training config, step, data RNG state, random streams, corpus identity, history

Fine-tuning: `init` (free parameters, e.g. a decoded base model's z) replaces theta_0's free parameters as the
start; its sha256 is recorded in train_state.json and a resumed run must start from the same.

Deterministic: the same spec, config and corpus give the same free parameters, bit for bit on one machine and
thread count, and a run resumed from any checkpoint continues exactly as if it had not stopped.

Randomness: the training windows, the evaluation windows and torch (dropout) each draw from their own stream,
derived from `seed` and a purpose tag (tokenbounds.streams), never from `default_rng(seed)`: a bound run with the
same seed draws from yet another stream, so its units are independent of the windows the hypothesis was fitted on.
"""

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tokenbounds.data.shards import Corpus
from tokenbounds.data.windows import random_windows
from tokenbounds.errors import UserError
from tokenbounds.files import holds_something
from tokenbounds.models.base import cpu_has_fast_bf16
from tokenbounds.models.parametrization import (
    FREE_FILE,
    SPEC_FILE,
    build_model,
    free_parameters,
    load_free_parameters,
    message_contents,
    spec_bytes,
)
from tokenbounds.streams import TRAIN_EVAL, TRAIN_TORCH, TRAIN_WINDOWS, describe, stream, torch_seed
from tokenbounds.train.config import TrainConfig

STATE_FILE = "train_state.json"
LN2 = math.log(2.0)  # losses are computed in nats (cross_entropy) and reported in bits
OPTIMIZER_FILE = "optimizer.pt"


def print_now(line: str) -> None:
    print(line, flush=True)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warmup from lr/warmup to lr, then a cosine from lr down to lr * min_lr_ratio at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    progress = min((step - cfg.warmup) / span, 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))


@dataclass
class TrainResult:
    step: int
    tokens: int
    seconds: float
    train_loss: float  # nats/token, mean over the last logging window
    val_loss: float | None  # nats/token on the evaluation windows, at the last evaluation
    history: list


def eval_line(record: dict, eval_name: str, tokens_per_second: float) -> str:
    """One evaluation's log line, in bits per token like the rest of tokenbounds."""
    return (
        f"step {record['step']}: train {record['train_bits_per_token']:.3f} bits/token (mean since the last "
        f"evaluation), {eval_name} {record['val_bits_per_token']:.3f} bits/token, {tokens_per_second:,.0f} tokens/s"
    )


def random_streams(seed: int) -> dict:
    """The trainer's streams, as train_state.json records them (enough to re-create each one exactly)."""
    torch_stream = {
        **describe(seed, TRAIN_TORCH),
        "generator": "torch.manual_seed",
        "torch_seed": torch_seed(seed, TRAIN_TORCH),
    }
    return {
        "windows": describe(seed, TRAIN_WINDOWS),
        "eval_windows": describe(seed, TRAIN_EVAL),
        "torch": torch_stream,
    }


def _corpus_identity(corpus: Corpus) -> dict:
    return {"tokens": corpus.n_tokens, "shards": list(corpus.names)}


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _save_checkpoint(out: Path, model, optimizer, state: dict, rng: np.random.Generator) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().clone() for k, v in free_parameters(model).items()}
    _write_atomic(out / FREE_FILE, lambda p: save_file(tensors, str(p)))
    blob = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
    _write_atomic(out / OPTIMIZER_FILE, lambda p: torch.save(blob, p))
    state = {**state, "data_rng": rng.bit_generator.state}
    _write_atomic(out / STATE_FILE, lambda p: p.write_text(json.dumps(state, indent=1) + "\n"))


def _differences(saved: dict, wanted: dict, ignore=()) -> list[str]:
    keys = sorted((set(saved) | set(wanted)) - set(ignore))
    return [f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in keys if saved.get(k) != wanted.get(k)]


def read_checkpoint_state(out: Path) -> dict:
    """The saved state of a resumable run in `out`; UserError when there is none or it is incomplete."""
    missing = [name for name in (SPEC_FILE, STATE_FILE, FREE_FILE, OPTIMIZER_FILE) if not (out / name).is_file()]
    if not out.is_dir() or missing:
        raise UserError(f"cannot resume: {out} holds no complete checkpoint (missing {', '.join(missing) or out})")
    try:
        state = json.loads((out / STATE_FILE).read_text())
        spec = json.loads((out / SPEC_FILE).read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"cannot resume: a checkpoint file in {out} is not valid JSON ({err})") from None
    return {**state, "spec": spec}


def init_identity(init: dict[str, torch.Tensor] | None) -> str | None:
    """sha256 over the names, dtypes, shapes and bytes of the free parameters a run starts from (None: theta_0)."""
    if init is None:
        return None
    digest = hashlib.sha256()
    for name in sorted(init):
        value = init[name].detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def _check_resumable(out: Path, spec: dict, cfg: TrainConfig, corpus: Corpus, init: str | None) -> dict:
    """The checkpoint state in `out`, if it is a run of this very spec, config, corpus and start; else UserError."""
    saved = read_checkpoint_state(out)
    if saved.get("init") != init:
        raise UserError(f"cannot resume: the checkpoint in {out} started from other free parameters (init)")
    if saved["spec"] != spec:
        differences = "; ".join(_differences(saved["spec"], spec))
        raise UserError(f"cannot resume: the checkpoint in {out} is for a different model spec ({differences})")
    diffs = _differences(saved["config"], cfg.to_dict(), ignore=TrainConfig.NON_TRAJECTORY)
    if diffs:
        raise UserError(f"cannot resume: the training config differs from the checkpoint's ({'; '.join(diffs)})")
    if saved["corpus"] != _corpus_identity(corpus):
        raise UserError(f"cannot resume: the checkpoint was trained on other data ({saved['corpus']})")
    if saved.get("random_streams") != random_streams(cfg.seed):
        # An older checkpoint drew its windows from default_rng(seed): continuing it would mix two derivations.
        raise UserError(
            f"cannot resume: the checkpoint in {out} was written with other random streams (an older tokenbounds); "
            "start a new run"
        )
    return saved


def _evaluate(model, windows: torch.Tensor, batch_size: int, bf16: bool) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(windows), batch_size):
            batch = windows[start : start + batch_size]
            logits = model(batch[:, :-1]).float()
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
            count += batch[:, 1:].numel()
    model.train()
    return float(total) / count


def train(
    spec: dict,
    cfg: TrainConfig,
    corpus: Corpus,
    out: str | Path,
    val_corpus: Corpus | None = None,
    resume: bool = False,
    progress: bool = True,
    log=print_now,
    extra_state: dict | None = None,
    stop_at_step: int | None = None,
    init: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train `spec`'s free parameters on `corpus`, writing checkpoints to `out`; returns the final figures.

    `extra_state` (JSON-serialisable) is stored in every checkpoint's train_state.json, for the caller.
    `stop_at_step` ends this invocation early, with a checkpoint there, as an interrupted run would; `resume` goes on.
    `init` (free parameters by name) is where training starts instead of theta_0 (fine-tuning).
    A config without lr takes its default for the spec; train_state.json records the lr used.
    """
    cfg = cfg.for_spec(spec)
    out = Path(out)
    context = int(spec["arch"]["context"])
    vocab = int(spec["arch"]["vocab_size"])
    corpus.check_vocab(vocab)
    if val_corpus is not None:
        val_corpus.check_vocab(vocab)
    start = init_identity(init)
    if resume:
        saved = _check_resumable(out, spec, cfg, corpus, start)
    elif holds_something(out):
        raise UserError(
            f"{out} exists and is not empty: choose a new --out, or pass --resume to continue the run in it"
        )

    # Fixed windows drawn once from their own stream; without a validation corpus they come from the training
    # corpus, so they may overlap training windows: not held out, and the log line says so.
    n_eval = cfg.eval_batches * cfg.batch_size
    eval_name = "validation corpus" if val_corpus is not None else f"{n_eval} fixed windows of the training corpus"
    eval_source = val_corpus if val_corpus is not None else corpus
    eval_windows = torch.from_numpy(
        random_windows(
            eval_source,
            n_eval,
            context + 1,
            stream(cfg.seed, TRAIN_EVAL),
            vocab_size=vocab,
        )
    )
    model = build_model(spec)
    if init is not None:
        load_free_parameters(model, init)  # refuses tensors that do not match the spec's free parameters
    params = free_parameters(model)
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
    )
    rng = stream(cfg.seed, TRAIN_WINDOWS)
    torch.manual_seed(torch_seed(cfg.seed, TRAIN_TORCH))  # dropout's stream
    history: list = []
    step, tokens, seconds = 0, 0, 0.0
    window_loss, window_steps = 0.0, 0  # training loss summed since the last evaluation
    if resume:
        from safetensors.torch import load_file

        load_free_parameters(model, load_file(str(out / FREE_FILE)))
        blob = torch.load(out / OPTIMIZER_FILE, weights_only=True)  # tensors and plain containers only
        optimizer.load_state_dict(blob["optimizer"])
        torch.set_rng_state(blob["torch_rng"])
        rng.bit_generator.state = saved["data_rng"]
        step, tokens, seconds, history = saved["step"], saved["tokens"], saved["seconds"], saved["history"]
        window_loss, window_steps = saved["window_loss"], saved["window_steps"]
        log(f"resuming {out} at step {step} of {cfg.steps}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        (out / SPEC_FILE).write_bytes(spec_bytes(spec) + b"\n")
    log(message_contents(model, spec))
    if cfg.bf16 and not cpu_has_fast_bf16():
        log("note: this CPU has no native bfloat16 (AVX512-BF16 / AMX): --bf16 is correct here but likely slower")

    base_state = {**(extra_state or {}), "config": cfg.to_dict(), "corpus": _corpus_identity(corpus)}
    base_state["random_streams"] = random_streams(cfg.seed)
    if start is not None:
        base_state["init"] = start

    model.train()
    val_loss = history[-1]["val_loss"] if history else None
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="training", unit="step", dynamic_ncols=True)
    started = time.perf_counter() - seconds
    while step < cfg.steps:
        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = 0.0
        for _ in range(cfg.grad_accum):
            batch = torch.from_numpy(random_windows(corpus, cfg.batch_size, context + 1, rng, vocab_size=vocab))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                logits = model(batch[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, vocab), batch[:, 1:].reshape(-1))
            (loss / cfg.grad_accum).backward()
            step_loss += loss.item() / cfg.grad_accum
        if not math.isfinite(step_loss):
            raise UserError(f"training diverged at step {step + 1} (loss {step_loss}): lower --lr")
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params.values(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += cfg.grad_accum * cfg.batch_size * context
        window_loss, window_steps = window_loss + step_loss, window_steps + 1
        elapsed = time.perf_counter() - started
        bar.update(1)
        bar.set_postfix_str(
            f"{step_loss / LN2:.3f} bits/token, lr {lr:.2e}, {tokens / max(elapsed, 1e-9):,.0f} tokens/s"
        )

        last = step == cfg.steps
        stopping = step == stop_at_step
        if step % cfg.eval_every == 0 or last:
            val_loss = _evaluate(model, eval_windows, cfg.batch_size, cfg.bf16)
            record = {
                "step": step,
                "tokens": tokens,
                "seconds": round(elapsed, 3),
                "train_loss": window_loss / window_steps,  # nats, as resumed runs have always stored them
                "val_loss": val_loss,
                "train_bits_per_token": window_loss / window_steps / LN2,
                "val_bits_per_token": val_loss / LN2,
            }
            history.append(record)
            window_loss, window_steps = 0.0, 0
            (bar.write if progress else log)(eval_line(record, eval_name, tokens / elapsed))
        if step % cfg.checkpoint_every == 0 or last or stopping:
            state = {**base_state, "step": step, "tokens": tokens, "seconds": elapsed, "history": history}
            state.update(window_loss=window_loss, window_steps=window_steps)
            _save_checkpoint(out, model, optimizer, state, rng)
        if stopping:
            break
    bar.close()
    seconds = time.perf_counter() - started
    final_train = history[-1]["train_loss"] if history else float("nan")
    return TrainResult(step, tokens, seconds, final_train, val_loss, history)
