"""The model `tokenbounds quantize` reads: its tensors in order, ties, config bytes, and its torch module (for QAT).

What the path is, the backend registry decides (`models.registry.backend_for`), as for `bound`; and the source is
loaded through that backend before anything is quantized, so a checkpoint `bound` would refuse is refused here too
(a tensor missing from it or unused by the architecture: `models.hf.check_loading_info`; free parameters that do
not match the spec: `parametrization.load_free_parameters`).

- a Hugging Face directory: the tensors as stored (safetensors, or pytorch_model*.bin read with
  `torch.load(weights_only=True)`: no code runs), so the message describes the checkpoint's own numbers;
- a .gguf file (or a directory holding only one): dequantized to float32 by transformers, tensors from the module;
- a GPT from `tokenbounds train`: its free parameters, with its spec (canonical JSON) as the config. theta_0 is
  regenerated from the spec's seed, so the message holds the spec and the free parameters only.
"""

import hashlib
import shutil
from pathlib import Path

import numpy as np

from tokenbounds.errors import UserError
from tokenbounds.models.hf import lone_gguf
from tokenbounds.models.parametrization import FORMAT as GPT_FORMAT
from tokenbounds.models.parametrization import load_trained, spec_bytes
from tokenbounds.models.registry import backend_for, priced_files

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
    """A model to quantize: its tensors in order, ties, config bytes, and the torch module it loads as."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        backend = backend_for(self.path)
        if backend.name not in ("hf", "tokenbounds-gpt"):
            raise UserError(
                f"{self.path} is a {backend.label}: quantize reads a Hugging Face model directory, a .gguf file or "
                "a GPT from `tokenbounds train`"
            )
        if backend.name == "hf":
            self.path = lone_gguf(self.path)
        self.files = priced_files(self.path)  # first: a missing or empty file is named before anything loads
        self.copy: list[Path] = []
        if backend.name == "tokenbounds-gpt":
            return self._read_gpt()
        # Loaded through the backend for its partial-load check; QAT trains this module.
        self.module = backend.load(self.path, "float32", "cpu").model
        if self.path.is_file():
            self._read_gguf()
        else:
            self._read_dir()

    def _read_dir(self) -> None:
        weights = [f for f in self.files if f.suffix in (".safetensors", ".bin")]
        self.format = "safetensors" if weights[0].suffix == ".safetensors" else "pytorch"
        tensors: dict[str, np.ndarray] = {}
        for f in weights:
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
            except Exception as err:
                raise UserError(f"cannot read weights {f}: {type(err).__name__}: {err}") from None
        self.tensors = tensors
        self.ties = find_ties(tensors)
        self.config = (self.path / "config.json").read_bytes()
        self.copy = [self.path / n for n in COPY_FILES if (self.path / n).is_file()]

    def _read_gpt(self) -> None:
        """A GPT from `tokenbounds train`: its free parameters are the tensors, its spec is the config."""
        model, spec = load_trained(self.path)
        self.format = GPT_FORMAT
        self.module = model
        self.tensors = {k: _to_numpy(v.detach()) for k, v in model.named_parameters() if v.requires_grad}
        self.ties = {}
        self.config = spec_bytes(spec)

    def _read_gguf(self) -> None:
        self.format = "gguf"
        sd = self.module.state_dict()
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
        self.config = self.module.config.to_json_string(use_diff=True).encode()

    def torch_module(self):
        """The source as a torch module (for QAT): the one its backend loaded and checked."""
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
            if self.module.generation_config is not None:
                self.module.generation_config.save_pretrained(out)
