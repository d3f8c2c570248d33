"""A fine-tuned model described relative to its base: the base's message followed by a coded delta of z.

A quantized SubLoRA GPT is its spec (architecture, the seeds of theta_0 and of the projection P) and z; its message
(`message.encode`) carries the spec as its config and decodes to z_base exactly. A model fine-tuned from z_base in
the same spec differs from it only in z, so it can be described by the base's message followed by a second message
coding delta = z_tuned - z_base, quantized to `levels` uniform float16 levels and range-coded like any quantized
tensor (`quantize.quantize_tensors`, with an empty config: the base's message already carries the spec). The
hypothesis this describes is

    z = z_base + delta_hat        (float32, elementwise; delta_hat the decoded delta)

and its description is both messages: 8 * (len(base) + len(delta)) bits. It is not z_tuned, nor z_tuned coded on
its own: it is what the two messages decode to, and that is what a bound must evaluate.

Directory written by `write_delta_model` (complete or absent: written under a temporary name, then renamed):

    spec.json, free_parameters.safetensors   the decoded hypothesis as a GPT from `train` (what `bound` opens)
    base.tbqm, delta.tbqm                    the two messages: the model's whole description
    delta.json                               {"format", "base_sha256", "delta_sha256", "base_bits", "delta_bits",
                                              "message_bits"}, all lengths in bits

`verify_delta_model` decodes both messages again and checks spec.json and free_parameters.safetensors against them
(UserError on any difference), so a directory that does not hold what its messages say is never bounded.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from tokenbounds.compress import message as msg
from tokenbounds.compress.quantize import quantize_tensors
from tokenbounds.errors import UserError
from tokenbounds.models.parametrization import FREE_FILE, SPEC_FILE

FORMAT = "tokenbounds-delta"
MANIFEST = "delta.json"
BASE_MESSAGE = "base.tbqm"
DELTA_MESSAGE = "delta.tbqm"


def code_delta(base: dict[str, np.ndarray], tuned: dict[str, np.ndarray], levels: int) -> bytes:
    """The message of tuned - base, every tensor quantized to `levels` uniform levels (its own codebook)."""
    if set(base) != set(tuned) or any(base[k].shape != tuned[k].shape for k in base):
        raise UserError("the fine-tuned free parameters do not match the base's (names or shapes)")
    delta = {k: np.asarray(tuned[k], np.float32) - np.asarray(base[k], np.float32) for k in base}
    return msg.encode(quantize_tensors(delta, levels, select=".*"))


def apply_delta(base_message: bytes, delta_message: bytes) -> tuple[bytes, dict[str, np.ndarray]]:
    """(the spec bytes, the free parameters z_base + delta_hat) that the two messages describe."""
    base = msg.decode(base_message)
    z_base = base.dequantize()
    delta = msg.decode(delta_message).dequantize()
    if set(delta) != set(z_base) or any(delta[k].shape != z_base[k].shape for k in z_base):
        raise UserError("the delta message codes other tensors than the base message")
    return base.config, {k: (z_base[k].astype(np.float32) + delta[k].astype(np.float32)) for k in z_base}


def _manifest(base_message: bytes, delta_message: bytes) -> dict:
    return {
        "format": FORMAT,
        "version": 1,
        "unit": "bits",
        "base_sha256": hashlib.sha256(base_message).hexdigest(),
        "delta_sha256": hashlib.sha256(delta_message).hexdigest(),
        "base_bits": 8 * len(base_message),
        "delta_bits": 8 * len(delta_message),
        "message_bits": 8 * (len(base_message) + len(delta_message)),
    }


def write_delta_model(out: Path, base_message: bytes, delta_message: bytes) -> dict:
    """Write the directory `out` (which must not exist) for the two messages; return its manifest."""
    from safetensors.numpy import save_file

    if out.exists():
        raise UserError(f"{out} exists: refusing to overwrite it")
    spec, values = apply_delta(base_message, delta_message)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # an interrupted write of this very directory
    partial.mkdir(parents=True)
    (partial / BASE_MESSAGE).write_bytes(base_message)
    (partial / DELTA_MESSAGE).write_bytes(delta_message)
    (partial / SPEC_FILE).write_bytes(spec)
    save_file({k: np.ascontiguousarray(v) for k, v in values.items()}, str(partial / FREE_FILE))
    manifest = _manifest(base_message, delta_message)
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(partial, out)
    return manifest


def verify_delta_model(path: Path) -> dict:
    """The manifest of the delta directory `path`, once its files are checked against its two messages."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        manifest = json.loads((path / MANIFEST).read_text())
        base_message, delta_message = (path / BASE_MESSAGE).read_bytes(), (path / DELTA_MESSAGE).read_bytes()
        stored = load_file(str(path / FREE_FILE))
        spec = (path / SPEC_FILE).read_bytes()
    except (OSError, json.JSONDecodeError, SafetensorError) as err:
        raise UserError(f"{path} is not a complete delta model directory ({err})") from None
    if manifest != _manifest(base_message, delta_message):
        raise UserError(f"{path / MANIFEST} does not describe the messages beside it: refusing to bound it")
    config, values = apply_delta(base_message, delta_message)
    if spec != config:
        raise UserError(f"{path / SPEC_FILE} differs from the spec in the base message: refusing to bound it")
    same = set(stored) == set(values) and all(
        stored[k].dtype == values[k].dtype and np.array_equal(stored[k], values[k]) for k in values
    )
    if not same:
        raise UserError(f"{path / FREE_FILE} differs from base + delta as decoded: refusing to bound it")
    return manifest
