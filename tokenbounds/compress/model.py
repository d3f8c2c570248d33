"""`tokenbounds quantize`: a whole model into a priced, loadable directory (its layout: `quantized_dir`).

`quantize_model(source, out, levels, ...)` reads the model at `source` (`source.Source`: a Hugging Face model
directory, a .gguf file or a GPT from `tokenbounds train`, refused when it does not load completely), quantizes it
(`quantize.quantize_tensors`), optionally refines the codebooks (`qat`), codes the message (`message.encode`), and
writes OUT: the message, the manifest, config.json, the decoded weights as model.safetensors, and the tokenizer
files. OUT is itself a Hugging Face model directory: loading it gives exactly the model the message describes.
"""

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from tokenbounds.compress import message as msg
from tokenbounds.compress.coding import entropy_bits
from tokenbounds.compress.quantize import quantize_tensors
from tokenbounds.compress.quantized_dir import FORMAT, MANIFEST, MESSAGE, WEIGHTS
from tokenbounds.compress.source import Source
from tokenbounds.errors import UserError
from tokenbounds.files import file_sha256, holds_something
from tokenbounds.models.parametrization import FORMAT as GPT_FORMAT


def quantize_model(
    source: "str | Path | Source",
    out: str | Path,
    levels: int,
    kmeans: bool = False,
    tensors: str | None = None,
    shared_codebook: bool = False,
    unquantized_dtype: str = "float16",
    configs_tried: int = 1,
    qat_steps: int = 0,
    data: str | Path | None = None,
    data_dtype: str | None = None,
    data_eot: int | None = None,
    qat_options: dict | None = None,
    progress: bool = True,
) -> dict:
    """Quantize the model at `source` into the directory `out`; return the manifest (also written to out).

    levels: codebook size L >= 2. kmeans: k-means centroids instead of uniform bins. tensors: regex of tensor names
    to quantize (default: every floating tensor with >= 2 dims). shared_codebook: one codebook for all.
    unquantized_dtype: storage of floating tensors left unquantized. configs_tried: how many configurations the user
    tried (paid as log2 K extra bits). qat_steps > 0 with `data` (a token-shard path): refine the centroids on
    training windows first (`qat.refine_codebooks`; options in qat_options; data_dtype / data_eot for a raw .bin).
    UserError on bad input or a non-empty `out`.
    """
    out = Path(out)
    if holds_something(out):
        raise UserError(f"{out} exists and is not empty: refusing to overwrite it")
    if configs_tried < 1:
        raise UserError(f"--configs-tried must be >= 1, got {configs_tried}")
    if qat_steps < 0:
        raise UserError(f"--qat-steps must be >= 0, got {qat_steps}")
    if qat_steps and data is None:
        raise UserError("--qat-steps needs --data (the training token shards)")
    if levels < 2:  # fail before loading a large model
        raise UserError(f"levels must be an integer >= 2, got {levels}")
    corpus = None
    if qat_steps:
        from tokenbounds.data.shards import open_corpus

        corpus = open_corpus(data, dtype=data_dtype, eot=data_eot)
    src = source if isinstance(source, Source) else Source(source)  # a Source can be reused across a sweep
    if tensors is None and src.format == GPT_FORMAT:
        tensors = ".*"  # a trained GPT's tensors are its free parameters (z is 1-D): code all of them
    state = quantize_tensors(
        src.tensors,
        levels,
        kmeans=kmeans,
        select=tensors,
        shared=shared_codebook,
        raw_dtype=unquantized_dtype,
        ties=src.ties,
        config=src.config,
    )
    qat_info = None
    if qat_steps:
        from tokenbounds.compress.qat import refine_codebooks

        state, qat_info = refine_codebooks(
            src.torch_module(), state, corpus, qat_steps, progress=progress, **(qat_options or {})
        )
        qat_info["data"] = str(data)
    coded = msg.encode(state)
    decoded = msg.decode(coded).dequantize()  # what the bound evaluates: decode the message itself
    original = src.tensors
    manifest = {
        "format": FORMAT,
        "version": 1,
        "unit": "bits",
        "message": MESSAGE,
        "message_bits": 8 * len(coded),
        "message_sha256": hashlib.sha256(coded).hexdigest(),
        "extra_bits": math.log2(configs_tried),
        "configs_tried": int(configs_tried),
        "levels": int(levels),
        "kmeans": bool(kmeans),
        "shared_codebook": bool(shared_codebook),
        "unquantized_dtype": unquantized_dtype,
        "tensors_pattern": tensors,
        "quantized_tensors": [e.name for e in state.entries if e.kind == "quantized"],
        "raw_tensors": [e.name for e in state.entries if e.kind == "raw"],
        "tied_tensors": {e.name: e.target for e in state.entries if e.kind == "alias"},
        "n_parameters": state.n_parameters,
        "n_quantized": state.n_quantized,
        "bits_per_parameter": 8 * len(coded) / state.n_parameters,
        "entropy_bits": sum(entropy_bits(g.counts) for g in state.groups),
        "breakdown": msg.breakdown(coded),
        "quantization_rmse": {
            e.name: float(np.sqrt(np.mean((decoded[e.name] - original[e.name].astype(np.float32)) ** 2)))
            for e in state.entries
            if e.kind == "quantized"
        },
        "qat": qat_info,
        "source": {
            "path": str(src.path),
            "format": src.format,
            "files": [{"name": f.name, "sha256": file_sha256(f)} for f in src.files],
        },
        "constriction": _constriction_version(),
        "weights": WEIGHTS,
    }
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / MESSAGE).write_bytes(coded)
    (out / "config.json").write_bytes(state.config)
    src.save_tokenizer(out)
    save_file({k: np.ascontiguousarray(v) for k, v in decoded.items()}, str(out / WEIGHTS), metadata={"format": "pt"})
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _constriction_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("constriction")
    except PackageNotFoundError:
        return "unknown"
