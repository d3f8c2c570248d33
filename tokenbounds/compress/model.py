"""Quantize a whole model into a priced, loadable directory, and load such a directory back (verified).

`quantize_model(source, out, levels, ...)` reads a Hugging Face model directory (config.json + *.safetensors, or
pytorch_model*.bin read with `torch.load(weights_only=True)`: no code runs) or a .gguf file (loaded through
transformers with `gguf_file=`, dequantized to float32), quantizes it (`quantize.quantize_tensors`), codes the
message (`message.encode`), and writes OUT:

    message.tbqm             the coded message: the prior's message length is 8 x its size in bits
    quantized.json           the manifest (below)
    config.json              the architecture config: byte for byte the config inside the message
    model.safetensors        the decoded weights (float32; tied tensors written under both names)
    generation_config.json, tokenizer files    copied when present (not part of the hypothesis, not priced)

OUT is itself a Hugging Face model directory: loading it gives exactly the model the message describes.

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
import json
import math
import shutil
from pathlib import Path

import numpy as np

from tokenbounds.compress import message as msg
from tokenbounds.compress.coding import entropy_bits
from tokenbounds.compress.quantize import QuantizedState, quantize_tensors
from tokenbounds.errors import UserError
from tokenbounds.files import file_sha256, holds_something

MANIFEST = "quantized.json"
MESSAGE = "message.tbqm"
WEIGHTS = "model.safetensors"
FORMAT = "tokenbounds-quantized"
COPY_FILES = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
)


def _to_numpy(t) -> np.ndarray:
    """torch tensor -> numpy; bfloat16 and other floating dtypes numpy lacks -> float32."""
    import torch

    t = t.detach().cpu()
    if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.float()
    return t.numpy().copy()


def find_ties(tensors: dict[str, np.ndarray], same_storage: list[tuple[str, str]] = ()) -> dict[str, str]:
    """alias -> target for tensors equal to an earlier one (shared storage reported by the caller, or equal values)."""
    ties = {a: t for a, t in same_storage}
    by_key: dict[tuple, list[str]] = {}
    for name, a in tensors.items():
        if name in ties:
            continue
        by_key.setdefault((a.shape, str(a.dtype)), []).append(name)
    for names in by_key.values():
        if len(names) < 2:
            continue
        digests: dict[str, str] = {}
        for name in names:
            d = hashlib.sha256(np.ascontiguousarray(tensors[name]).tobytes()).hexdigest()
            if d in digests and np.array_equal(tensors[name], tensors[digests[d]]):
                ties[name] = digests[d]
            else:
                digests.setdefault(d, name)
    for alias, target in ties.items():  # point every alias at a tensor that is not itself an alias
        while target in ties:
            target = ties[target]
        ties[alias] = target
    return ties


class Source:
    """A model to quantize: its tensors in order, ties, config bytes, and how to rebuild the torch module."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"{self.path} does not exist")
        self.module = None  # a loaded torch model, when one was needed
        if self.path.is_file() and self.path.suffix == ".gguf":
            self._load_gguf()
        elif self.path.is_dir() and (self.path / "spec.json").is_file():
            self._load_gpt()
        elif self.path.is_dir():
            self._load_dir()
        else:
            raise UserError(f"{self.path}: expected a Hugging Face model directory or a .gguf file")

    def _load_dir(self) -> None:
        d = self.path
        if not (d / "config.json").is_file():
            raise UserError(f"{d} has no config.json: not a Hugging Face model directory")
        files = sorted(d.glob("*.safetensors"))
        self.format = "safetensors"
        if not files:
            files = sorted(d.glob("pytorch_model*.bin"))
            self.format = "pytorch"
        if not files:
            ggufs = sorted(d.glob("*.gguf"))
            if len(ggufs) == 1:
                self.path = ggufs[0]
                return self._load_gguf()
            raise UserError(f"{d} holds no model weights (*.safetensors or pytorch_model*.bin)")
        tensors: dict[str, np.ndarray] = {}
        for f in files:
            if f.stat().st_size == 0:
                raise UserError(f"{f} is empty")
            try:
                if self.format == "safetensors":
                    from safetensors import safe_open

                    with safe_open(str(f), framework="pt") as fh:
                        for k in fh.keys():
                            tensors[k] = _to_numpy(fh.get_tensor(k))
                else:
                    import torch

                    sd = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
                    for k, v in sd.items():
                        tensors[k] = _to_numpy(v)
            except UserError:
                raise
            except Exception as err:
                raise UserError(f"cannot read weights {f}: {type(err).__name__}: {err}") from None
        self.tensors = tensors
        self.ties = find_ties(tensors)
        self.config = (d / "config.json").read_bytes()
        self.files = files + [d / "config.json"]
        self.copy = [d / n for n in COPY_FILES if (d / n).is_file()]

    def _load_gpt(self) -> None:
        """A GPT from `tokenbounds train`: its free parameters are the tensors, its spec is the config.

        theta_0 is regenerated from the spec's seed, so the message holds the spec (canonical JSON) and the free
        parameters only; `tokenbounds.hypothesis.load_any` rebuilds exactly this network from a decoded message.
        """
        from tokenbounds.models.parametrization import FORMAT, FREE_FILE, SPEC_FILE, load_trained, spec_bytes

        model, spec = load_trained(self.path)
        self.format = FORMAT
        self.module = model
        self.tensors = {k: _to_numpy(v.detach()) for k, v in model.named_parameters() if v.requires_grad}
        self.ties = {}
        self.config = spec_bytes(spec)
        self.files = [self.path / SPEC_FILE, self.path / FREE_FILE]
        self.copy = []

    def _load_gguf(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        f = self.path
        if f.stat().st_size == 0:
            raise UserError(f"{f} is empty")
        self.format = "gguf"
        try:
            model = AutoModelForCausalLM.from_pretrained(str(f.parent), gguf_file=f.name, dtype=torch.float32)
        except Exception as err:
            raise UserError(f"cannot load {f} through transformers: {type(err).__name__}: {err}") from None
        model.eval()
        self.module = model
        sd = model.state_dict()
        first_by_ptr: dict[int, str] = {}
        shared = []
        tensors = {}
        for k, v in sd.items():
            ptr = v.untyped_storage().data_ptr() + v.storage_offset() * v.element_size()
            if ptr in first_by_ptr and sd[first_by_ptr[ptr]].shape == v.shape:
                shared.append((k, first_by_ptr[ptr]))
            else:
                first_by_ptr.setdefault(ptr, k)
            tensors[k] = _to_numpy(v)
        self.tensors = tensors
        self.ties = find_ties(tensors, shared)
        self.config = model.config.to_json_string(use_diff=True).encode()
        self.files = [f]
        self.copy = []

    def torch_module(self):
        """The source as a torch module (for QAT), loaded from safetensors / .bin without running repository code."""
        if self.module is None:
            import torch
            from transformers import AutoModelForCausalLM

            try:
                self.module = AutoModelForCausalLM.from_pretrained(str(self.path), dtype=torch.float32)
            except Exception as err:
                raise UserError(f"cannot load {self.path} as a causal LM: {type(err).__name__}: {err}") from None
            self.module.eval()
        return self.module

    def save_tokenizer(self, out: Path) -> None:
        for f in self.copy:
            shutil.copy2(f, out / f.name)
        if self.format == "gguf":
            try:
                from transformers import AutoTokenizer

                AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name).save_pretrained(out)
            except Exception as err:  # the weights are still usable; say so
                print(f"warning: could not extract the tokenizer from {self.path.name}: {err}")
            if self.module is not None and self.module.generation_config is not None:
                self.module.generation_config.save_pretrained(out)


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
    if tensors is None and src.format == "tokenbounds-gpt":
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


def is_quantized_dir(path: str | Path) -> bool:
    """True when `path` is a directory written by `quantize_model` (it holds quantized.json)."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def load_quantized(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Decode and verify a quantized directory -> (state dict of numpy arrays, manifest).

    Checks, each a UserError when it fails ("refuse to bound it"): the manifest exists and is ours; the message's
    sha256 and length match the manifest; the message's own checksum and structure (`message.decode`); config.json
    equals the config inside the message; model.safetensors, when present, holds exactly the decoded tensors
    (same names, dtypes, shapes and values). Use manifest["message_bits"] and manifest["extra_bits"] for the prior.
    """
    d = Path(path)
    if not is_quantized_dir(d):
        raise UserError(f"{d} is not a quantized model directory (no {MANIFEST})")
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{d / MANIFEST} is not valid JSON: {err}") from None
    if manifest.get("format") != FORMAT:
        raise UserError(f"{d / MANIFEST} is not a tokenbounds quantized-model manifest")
    mpath = d / manifest.get("message", MESSAGE)
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
