"""The quantized model directory written by `tokenbounds quantize`: its layout, and loading it back verified.

    message.tbqm             the coded message: the prior's message length is 8 x its size in bits
    quantized.json           the manifest (below)
    config.json              the architecture config: byte for byte the config inside the message
    model.safetensors        the decoded weights (float32; tied tensors written under both names)
    generation_config.json, tokenizer files    copied when present (not part of the hypothesis, not priced)

Manifest (quantized.json), all lengths in bits:

    {"format": "tokenbounds-quantized", "version": 1, "unit": "bits",
     "message": "message.tbqm", "message_bits": 8 * bytes, "message_sha256": hex,
     "extra_bits": log2(configs_tried), "configs_tried": K,
     "levels": L, "kmeans": bool, "shared_codebook": bool, "unquantized_dtype": "float16",
     "tensors_pattern": regex or null, "quantized_tensors": [...], "raw_tensors": [...],
     "tied_tensors": {alias: target},
     "n_parameters": scalars described (tied counted once), "n_quantized": scalars quantized,
     "bits_per_parameter": message_bits / n_parameters, "entropy_bits": sum of n*H over codebooks,
     "breakdown": {"container_bits", "header_bits", "coded_symbols_bits", "raw_bits", "total_bits"},
     "quantization_rmse": {name: rms error of the quantized tensor}, "qat": null or {...},
     "source": {"path", "format", "files": [{"name", "sha256"}]}, "constriction": version,
     "weights": "model.safetensors"}

The bound uses message_bits as C and extra_bits as the price of the configurations tried (levels, k-means or
not, QAT steps, tensor patterns): `--configs-tried K` declares how many were tried; K = 1 by default.

`load_quantized(dir)` decodes the message, checks it against the manifest's sha256 and length, checks config.json
and model.safetensors against the message, and returns the decoded state dict: anything that does not match is a
UserError (the directory is refused, never bounded).
"""

import hashlib
from pathlib import Path

import numpy as np

from tokenbounds.compress import message as msg
from tokenbounds.compress.quantize import QuantizedState
from tokenbounds.errors import UserError
from tokenbounds.files import read_json

MANIFEST = "quantized.json"
MESSAGE = "message.tbqm"
WEIGHTS = "model.safetensors"
FORMAT = "tokenbounds-quantized"


def is_quantized_dir(path: str | Path) -> bool:
    """True when `path` is a directory written by `quantize_model` (it holds quantized.json)."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict:
    """The manifest of the quantized directory `path`, parsed (not yet checked against the message)."""
    d = Path(path)
    if not is_quantized_dir(d):
        raise UserError(f"{d} is not a quantized model directory (no {MANIFEST})")
    manifest = read_json(d / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{d / MANIFEST} is not a tokenbounds quantized-model manifest")
    return manifest


def message_path(path: str | Path, manifest: dict) -> Path:
    """The coded message of the quantized directory `path`: the model's whole description."""
    return Path(path) / manifest.get("message", MESSAGE)


def load_quantized(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Decode and verify a quantized directory -> (state dict of numpy arrays, manifest).

    Checks, each a UserError when it fails ("refuse to bound it"): the manifest exists and is ours; the message's
    sha256 and length match the manifest; the message's own checksum and structure (`message.decode`); config.json
    equals the config inside the message; model.safetensors, when present, holds exactly the decoded tensors
    (same names, dtypes, shapes and values). Use manifest["message_bits"] and manifest["extra_bits"] for the prior.
    """
    d = Path(path)
    manifest = read_manifest(d)
    mpath = message_path(d, manifest)
    if not mpath.is_file():
        raise UserError(f"{mpath} is missing: the message is the model's description")
    coded = mpath.read_bytes()
    if hashlib.sha256(coded).hexdigest() != manifest.get("message_sha256") or 8 * len(coded) != manifest.get(
        "message_bits"
    ):
        raise UserError(f"{mpath} does not match the manifest (sha256 or length): refusing to bound it")
    state: QuantizedState = msg.decode(coded)
    weights = state.dequantize()
    cfg = d / "config.json"
    if state.config and (not cfg.is_file() or cfg.read_bytes() != state.config):
        raise UserError(f"{cfg} differs from the config inside the message: refusing to bound it")
    wpath = d / manifest.get("weights", WEIGHTS)
    if wpath.is_file():
        from safetensors.numpy import load_file

        try:
            stored = load_file(str(wpath))
        except Exception as err:
            raise UserError(f"cannot read {wpath}: {err}") from None
        if set(stored) != set(weights):
            extra = sorted(set(stored) ^ set(weights))[:3]
            raise UserError(f"{wpath} holds other tensors than the message (e.g. {extra}): refusing to bound it")
        for k, v in weights.items():
            s = stored[k]
            if s.dtype != v.dtype or s.shape != v.shape or not np.array_equal(s, v):
                raise UserError(f"{wpath}: tensor {k} differs from the decoded message: refusing to bound it")
    return weights, manifest
