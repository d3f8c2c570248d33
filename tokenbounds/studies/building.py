"""What a study row builds in its run directory, resumably (a trained model, a quantized one, a priced frozen copy),
and the bound it asks for.

Each is written so that an interrupted study resumes where it stopped: training continues from its last checkpoint
(or starts again when it was killed before the first), and a quantized or copied directory is written under a
`.partial` name and renamed when whole, so a directory that exists is complete.
"""

import json
import os
import shutil
from pathlib import Path

from tokenbounds.compress.model import quantize_model
from tokenbounds.data.shards import open_corpus
from tokenbounds.errors import UserError
from tokenbounds.files import holds_something
from tokenbounds.models.parametrization import FREE_FILE, SPEC_FILE
from tokenbounds.request import BoundRequest
from tokenbounds.train.trainer import TrainConfig, read_checkpoint_state, train

FIXED_MTIME = 946_684_800  # 2000-01-01 UTC


def trained_model(
    model_dir: Path,
    spec: dict,
    train_cfg: TrainConfig,
    data: Path,
    *,
    stop: int | None = None,
    init=None,
    progress: bool = False,
) -> dict:
    """model_dir trained on the corpus at `data` to step `stop` (default: the schedule's end) of train_cfg's schedule:
    reused when it is there, resumed from its last checkpoint, started again when killed before the first.

    Returns {"dir", "step", "seconds", "history"}.
    """
    stop = train_cfg.steps if stop is None else stop
    resume = False
    if holds_something(model_dir):
        try:
            state = read_checkpoint_state(model_dir)
        except UserError:
            shutil.rmtree(model_dir)  # interrupted before its first checkpoint: nothing to continue
        else:
            if state["step"] > stop:
                raise RuntimeError(f"{model_dir} is past step {stop}: its rows ran out of order")
            if state["step"] == stop:
                return {"dir": model_dir, "step": stop, "seconds": state["seconds"], "history": state["history"]}
            resume = True
    result = train(
        spec,
        train_cfg,
        open_corpus(data),
        model_dir,
        resume=resume,
        progress=progress,
        log=lambda line: None,
        stop_at_step=stop if stop < train_cfg.steps else None,
        init=init,
    )
    return {"dir": model_dir, "step": result.step, "seconds": result.seconds, "history": result.history}


def quantized_model(target: Path, source: Path, **quantize) -> tuple[Path, dict]:
    """`target`: the model at `source` quantized (quantize_model's options), written whole or not at all."""
    if (target / "quantized.json").is_file():
        return target, json.loads((target / "quantized.json").read_text())
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    manifest = quantize_model(source, partial, progress=False, **quantize)
    os.replace(partial, target)
    return target, manifest


def frozen_copy(target: Path, source: Path) -> Path:
    """`target`: the hypothesis' two files with one fixed mtime. `tar -czf` stores every member's mtime, so without
    this the paper's price of an unquantized model would depend on when its files were written."""
    if (target / FREE_FILE).is_file():
        return target
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    for file in (SPEC_FILE, FREE_FILE):
        shutil.copyfile(source / file, partial / file)
        os.utime(partial / file, (FIXED_MTIME, FIXED_MTIME))
    os.replace(partial, target)
    return target


def block_bound(cfg, out: Path, model: Path | str, *, data: str | None = None, **options) -> BoundRequest:
    """The studies' bound of a row's model on the study's corpus (out/data, or `data`): eb, block units, betting (the
    tightest configuration), with the study config's samples, context, stride, delta and seed. `options`: the prior
    (message_bits, checkpoint_size), the run's settings (codecs, compute_dtype, device, batch_tokens) and progress
    (off unless given)."""
    return BoundRequest(
        model=str(model),
        data=str(out / "data") if data is None else data,
        method="eb",
        mode="block",
        subsample_ucb="betting",
        samples=cfg.samples,
        context=cfg.context,
        stride=cfg.stride,
        delta=cfg.delta,
        seed=cfg.seed,
        **{"progress": False, **options},
    )
