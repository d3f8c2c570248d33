"""One entry point from a model path to a `LogitModel`: which backend, and which exact hypothesis.

It sits beside the pipeline, where the parts meet: it needs both the decoder (compress) and the networks (models).

- a directory written by `tokenbounds quantize`: the message is decoded and verified against the directory's
  weights first (`load_quantized`); a tokenbounds GPT is rebuilt from its spec (the message's config) and the decoded
  free parameters, a Hugging Face model is loaded from the verified directory;
- a directory written by `tokenbounds train` (spec.json + free_parameters.safetensors): the trained GPT;
- a QuIP# checkpoint (config.json has `quip_params`): decoded and evaluated by the user's quip-sharp checkout in a
  worker process (`models.quip`), only when asked with `quip_sharp`;
- anything else: a Hugging Face directory or a .gguf file (`models.hf.load_model`).
"""

import json
import sys
from pathlib import Path

import torch

from tokenbounds.compress.model import is_quantized_dir, load_quantized
from tokenbounds.errors import UserError
from tokenbounds.models.base import LogitModel
from tokenbounds.models.gpt import GPTLogitModel
from tokenbounds.models.hf import COMPUTE_DTYPES, check_device, load_model
from tokenbounds.models.parametrization import FORMAT as GPT_FORMAT
from tokenbounds.models.parametrization import SPEC_FILE, build_model, load_free_parameters, load_trained
from tokenbounds.models.quip import QuipSharpModel, is_quip_checkpoint


def _gpt(model, spec: dict, source: str, dtype: str, device: str) -> GPTLogitModel:
    if device != "cpu":
        raise UserError("tokenbounds GPTs are evaluated on the CPU (they are small); drop --device")
    return GPTLogitModel(model, spec, source=source, bfloat16=dtype == "bfloat16")


def load_any(
    path: str | Path,
    dtype: str = "float32",
    device: str = "cpu",
    verified: tuple[dict, dict] | None = None,
    quip_sharp: str | Path | None = None,
    quip_python: str | None = None,
) -> LogitModel:
    """The hypothesis at `path`, ready to score, in the given compute dtype and device.

    `verified` is what `load_quantized(path)` returned, when the caller already decoded and checked the directory.
    `quip_sharp` (a quip-sharp checkout) and `quip_python` (the Python of its environment, default: this one) are
    for QuIP# checkpoints only; the worker checks the device there, since quip-sharp runs its own torch.
    """
    if dtype not in COMPUTE_DTYPES:
        raise UserError(f"unknown compute dtype {dtype!r}; use one of {', '.join(COMPUTE_DTYPES)}")
    path = Path(path)
    if is_quip_checkpoint(path):
        return _quip(path, dtype, device, quip_sharp, quip_python)
    if quip_sharp is not None:
        raise UserError(f"--quip-sharp is for QuIP# checkpoints, and {path} is not one (no quip_params in config.json)")
    check_device(device)
    if is_quantized_dir(path):
        weights, manifest = verified if verified is not None else load_quantized(path)
        if manifest["source"].get("format") == GPT_FORMAT:
            spec = json.loads((path / "config.json").read_text())  # verified equal to the message's config
            model = build_model(spec)
            load_free_parameters(model, {k: torch.from_numpy(v.copy()) for k, v in weights.items()})
            return _gpt(model.eval(), spec, str(path), dtype, device)
        return load_model(path, dtype, device)
    if path.is_dir() and (path / SPEC_FILE).is_file():
        model, spec = load_trained(path)
        return _gpt(model, spec, str(path), dtype, device)
    return load_model(path, dtype, device)


def _quip(path: Path, dtype: str, device: str, quip_sharp, quip_python) -> QuipSharpModel:
    if quip_sharp is None:
        raise UserError(
            f"{path} is a QuIP# checkpoint (config.json has quip_params): its decoder and CUDA kernels are in "
            "quip-sharp; pass --quip-sharp DIR (a built checkout) and --quip-python PYTHON (its environment)"
        )
    if dtype != "float32":
        raise UserError(
            "QuIP# models run in quip-sharp's own compute dtype (recorded in the report); drop --compute-dtype"
        )
    return QuipSharpModel(path, quip_sharp, quip_python or sys.executable, device)
