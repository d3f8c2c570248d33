"""A directory from `tokenbounds quantize` (backend "tokenbounds-quantized"): its coded message, decoded and verified.

The message (and the manifest, config.json and model.safetensors beside it) is checked by
`compress.quantized_dir.load_quantized` before anything is evaluated. A quantized tokenbounds GPT is rebuilt from its
spec (the message's config) and the decoded free parameters; a quantized Hugging Face model is loaded from the
verified directory, which is a Hugging Face directory holding exactly the decoded weights (with the partial-load
check). The message is the model's whole description: it is what is priced, 8 bits per byte.
"""

import json
from pathlib import Path

import torch

from tokenbounds.compress.quantized_dir import FORMAT, is_quantized_dir, load_quantized, message_path, read_manifest
from tokenbounds.models.base import LogitModel
from tokenbounds.models.hf import load_model
from tokenbounds.models.parametrization import FORMAT as GPT_FORMAT
from tokenbounds.models.parametrization import build_model, load_free_parameters
from tokenbounds.models.registry import Backend, register_backend
from tokenbounds.models.trained import gpt_logit_model

DECODED = f"{FORMAT} directory (message decoded and verified)"


@register_backend("tokenbounds-quantized")
class Quantized(Backend):
    label = "directory from `tokenbounds quantize`"

    def can_open(self, path: Path) -> bool:
        return is_quantized_dir(path)

    def load(self, path: Path, compute_dtype: str, device: str) -> LogitModel:
        """The decoded model, carrying its verified manifest as `verified_manifest`: the prior prices exactly it."""
        weights, manifest = load_quantized(path)  # decoded and verified once, here
        if manifest["source"].get("format") == GPT_FORMAT:
            spec = json.loads((path / "config.json").read_text())  # verified equal to the message's config
            model = build_model(spec)
            load_free_parameters(model, {k: torch.from_numpy(v.copy()) for k, v in weights.items()})
            loaded = gpt_logit_model(model.eval(), spec, path, compute_dtype, device, fmt=f"{DECODED} of a GPT")
        else:
            loaded = load_model(path, compute_dtype, device)
            loaded.format = f"{DECODED}, {loaded.format}"
        loaded.verified_manifest = manifest
        return loaded

    def priced_files(self, path: Path) -> list[Path]:
        return [message_path(path, read_manifest(path))]
