"""Hugging Face causal language models from local files: a model directory, or a .gguf file (backend "hf").

A GGUF file is read by transformers (it needs the `gguf` package) and dequantized to float32, so the
hypothesis is "this file, dequantized, evaluated in the compute dtype".
Nothing is fetched from a hub (local_files_only), and no repository code is executed (trust_remote_code
stays off; .bin checkpoints load with weights_only). A checkpoint that does not fill the architecture exactly is
refused (`check_loading_info`).

Device "auto" (a model larger than one GPU): transformers loads the model with accelerate's `device_map="auto"`,
which fills the visible GPUs in layer order (and offloads to the CPU what does not fit). A model that spans several
devices carries accelerate's hooks: every module's inputs are moved to its own device, and the whole model's
outputs come back to the device its inputs came from, which is the model's `device` (the first GPU of the map).

Priced files: a .gguf file alone (it carries its architecture and tokenizer); for a directory, config.json (the
architecture: a decoder cannot rebuild the network without it), the shard index if any, and every *.safetensors
(else pytorch_model*.bin) file. Not priced: generation_config.json (how to sample, irrelevant to next-token
probabilities) and tokenizer files (the tokenizer defines the token sequence the bound is about, fixed before the data
is scored; it is part of the data, not of the hypothesis).
"""

import contextlib
import inspect
import logging
import warnings
from pathlib import Path

import torch

from tokenbounds.architecture import dense_parameter_count, packed_format
from tokenbounds.errors import UserError
from tokenbounds.models.base import AUTO_DEVICE, COMPUTE_DTYPES, check_device, description
from tokenbounds.models.registry import Backend, register_backend

CONFIG_FILES = ("config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def check_gguf(path: Path) -> int:
    """Parse the GGUF header and tensor table; a corrupt or truncated file is refused here. Returns the number of
    values its tensors hold (dequantized count)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        if not reader.tensors:
            raise ValueError("no tensors")
        end = max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)
        if end > path.stat().st_size:
            raise ValueError("truncated")
        return sum(int(t.n_elements) for t in reader.tensors)
    except Exception as err:  # the reader raises many kinds of errors on bad files
        raise UserError(f"{path} is not a readable GGUF file ({err.__class__.__name__}: {err})") from None


def _plain_head(model) -> torch.nn.Linear | None:
    """The model's output head if it is a bias-free float32 nn.Linear (one that can write into `out`), else None."""
    head = model.get_output_embeddings()
    plain = type(head) is torch.nn.Linear and head.bias is None and head.weight.dtype == torch.float32
    return head if plain else None


@contextlib.contextmanager
def _head_writing_into(head: torch.nn.Linear | None, out: torch.Tensor | None):
    """While open, the output head writes its logits into `out` (base.py: `LogitModel.logits`).

    A fresh (B, K, V) float32 tensor per batch (200 MB for 1,024 positions of a 49k vocabulary) costs a page fault
    per 4 KiB, ~35 ms a window on a CPU. F.linear(x, W) of a bias-free float32 nn.Linear is torch.matmul(x, W.T), the
    same GEMM call (tested bit for bit), so `out` changes where the values land, not their bits. An input of another
    shape or dtype runs the head as it is, and whatever the model does after its head (a logit scale or cap) still
    happens: the caller uses the model's return value.
    """
    if head is None or out is None:
        yield
        return
    weight = head.weight

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dtype != weight.dtype or tuple(x.shape[:-1]) + (weight.shape[0],) != tuple(out.shape):
            return torch.nn.functional.linear(x, weight)
        return torch.matmul(x, weight.t(), out=out)

    head.forward = forward  # an instance attribute: nn.Module.__call__ finds it before the class's forward
    try:
        yield
    finally:
        del head.forward


class HFLogitModel:
    """A transformers causal LM behind the `LogitModel` interface."""

    def __init__(self, model, source: str, fmt: str, dtype: str, device: str = "cpu", n_weights: int | None = None):
        self.n_weights = n_weights  # packed quantized checkpoints: the weights their architecture has
        # accelerate sets hf_device_map only on a model it spread over several devices (and hooked)
        self.device_map = dict(getattr(model, "hf_device_map", None) or {}) if device == AUTO_DEVICE else {}
        if device == AUTO_DEVICE:  # placed by from_pretrained's device_map: moving it would undo the placement
            self.device = placed_device(model, self.device_map)
            self.model = model.eval()
        else:
            self.device = torch.device(device)
            self.model = model.eval().to(self.device)
        self.source, self.format, self.dtype = source, fmt, dtype
        head = model.get_output_embeddings()
        self.vocab_size = int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)
        config = model.config
        self.max_positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        self._keep_supported = "logits_to_keep" in inspect.signature(model.forward).parameters
        # Only the kept positions' logits fit `out`; a model spread over devices returns them from elsewhere.
        self._head = _plain_head(model) if self._keep_supported and not self.device_map else None
        self.fills_out = self._head is not None

    def logits(self, input_ids: torch.Tensor, keep: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if self.device_map:
            return self._spread_logits(input_ids, keep)
        with torch.inference_mode(), _head_writing_into(self._head, out):
            if self._keep_supported:
                logits = self.model(input_ids=input_ids, logits_to_keep=keep, use_cache=False).logits
            else:
                logits = self.model(input_ids=input_ids, use_cache=False).logits[:, keep]
        return logits.float()

    def _spread_logits(self, input_ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Logits of a model spread over several devices, on `self.device`.

        accelerate's hooks move every tensor argument to the first GPU, where `keep` could not index hidden states
        that the last layers left on another GPU. The scorer's `keep` is a suffix of the positions (lo .. T - 1):
        that is `logits_to_keep` as a count, which the model slices on the hidden states' own device. Any other
        `keep` is taken from the full logits.
        """
        length, k = input_ids.shape[1], len(keep)
        suffix = k > 0 and int(keep[0]) == length - k and int(keep[-1]) == length - 1
        if self._keep_supported and suffix:
            out = self.model(input_ids=input_ids, logits_to_keep=k, use_cache=False).logits
        else:
            out = self.model(input_ids=input_ids, use_cache=False).logits
            out = out[:, keep.to(out.device)]
        return out.float().to(self.device)

    def describe(self) -> dict:
        return description(
            backend="hf",
            source=self.source,
            format=self.format,
            architecture=(self.model.config.architectures or [type(self.model).__name__])[0],
            # A packed format keeps its integers as buffers: count the weights they stand for instead.
            n_parameters=self.n_weights or sum(p.numel() for p in self.model.parameters()),
            vocab_size=self.vocab_size,
            compute_dtype=self.dtype,
            device=self.device.type,
            details=self._placement(),
        )

    def _placement(self) -> dict:
        """Where a model spread by accelerate runs: the device map's devices, with how many modules each holds."""
        if not self.device_map:
            return {}
        counts: dict[str, int] = {}
        for where in self.device_map.values():
            name = device_name(where)
            counts[name] = counts.get(name, 0) + 1
        return {"device_map": "auto (accelerate)", "modules_per_device": counts}


def device_name(where) -> str:
    """A device map's value (a GPU index, "cuda:1", "cpu", "disk") as a device name."""
    return f"cuda:{where}" if isinstance(where, int) else str(where)


def placed_device(model, device_map: dict) -> torch.device:
    """Where a model placed by `device_map="auto"` takes its inputs and gives its logits: the first GPU of its device
    map (accelerate's hooks move the inputs to the map's main GPU and return the outputs to where the inputs were),
    or, on one device, that device."""
    gpus = [device_name(w) for w in device_map.values() if device_name(w) not in ("cpu", "disk", "meta")]
    if gpus:
        return torch.device(gpus[0])
    if device_map:  # spread over the CPU and the disk only: the CPU runs it
        return torch.device("cpu")
    return next(model.parameters()).device


def check_loading_info(info: dict, source: Path) -> None:
    """Refuse a model that transformers loaded only in part.

    transformers fills weights the checkpoint lacks with a fresh random initialisation and drops tensors the
    architecture has no place for, with only a log line (which we silence). Either way the evaluated network would
    not be the one the checkpoint describes, so the bound would price one model and evaluate another.
    """
    problems = {
        "missing from the checkpoint (would be randomly initialised)": info.get("missing_keys"),
        "in the checkpoint but not used by the architecture": info.get("unexpected_keys"),
        "of the wrong shape": [name for name, *_ in info.get("mismatched_keys") or ()],
        "failing to load": info.get("error_msgs"),
    }
    for what, names in problems.items():
        if names:
            names = sorted(str(n) for n in names)
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise UserError(f"{source}: {len(names)} tensor(s) {what}: {shown}; refusing a partially loaded model")


def _from_pretrained(directory: Path, torch_dtype: torch.dtype, **kwargs):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = AutoModelForCausalLM.from_pretrained(
            directory,
            dtype=torch_dtype,
            local_files_only=True,
            trust_remote_code=False,
            output_loading_info=True,
            **kwargs,
        )
    return model, info


def _load_gguf(path: Path, torch_dtype: torch.dtype):
    stored = check_gguf(path)
    try:
        model, info = _from_pretrained(path.parent, torch.float32, gguf_file=path.name)
    except Exception as err:
        raise UserError(f"transformers could not load {path} ({err.__class__.__name__}: {err})") from None
    check_loading_info(info, path)
    # transformers drops GGUF tensors it has no name for without reporting them: count what the network holds.
    used = sum(p.numel() for p in model.parameters())
    if stored > used:
        raise UserError(
            f"{path}: {stored - used:,} of its {stored:,} stored values are in tensors the architecture does not use; "
            "refusing a partially loaded model"
        )
    return model.to(torch_dtype)


def load_model(path: str | Path, dtype: str = "float32", device: str = "cpu") -> HFLogitModel:
    """Load a causal LM from a local model directory or a .gguf file, in the given compute dtype and device.

    The weights are loaded in the compute dtype (base.py: what a compute dtype means).
    """
    if dtype not in COMPUTE_DTYPES:
        raise UserError(f"unknown compute dtype {dtype!r}; use one of {', '.join(COMPUTE_DTYPES)}")
    check_device(device)
    torch_dtype = COMPUTE_DTYPES[dtype]
    path = Path(path)
    if not path.exists():
        raise UserError(f"model path {path} does not exist")
    path = lone_gguf(path)
    if path.is_file():
        if path.suffix != ".gguf":
            raise UserError(f"{path} is a file but not a .gguf; give a model directory or a .gguf file")
        if device == AUTO_DEVICE:
            raise UserError(
                f"{path}: device 'auto' spreads a model directory over the GPUs; a .gguf file is "
                "dequantized on the CPU first: use cuda (or cpu)"
            )
        model = _load_gguf(path, torch_dtype)
        return HFLogitModel(model, str(path), "gguf (dequantized by transformers)", dtype, device)
    if not (path / "config.json").is_file():
        raise UserError(f"{path} has no config.json: not a Hugging Face model directory")
    try:
        placement = {"device_map": "auto"} if device == AUTO_DEVICE else {}
        model, info = _from_pretrained(path, torch_dtype, **placement)
    except Exception as err:
        raise UserError(f"transformers could not load {path} ({err.__class__.__name__}: {err})") from None
    check_loading_info(info, path)
    packed = packed_format(path)
    if packed is None:
        return HFLogitModel(model, str(path), "huggingface directory", dtype, device)
    _pin_dequantizing_kernels(model)
    fmt = f"huggingface directory, {packed}-quantized"
    return HFLogitModel(model, str(path), fmt, dtype, device, n_weights=dense_parameter_count(path))


def _pin_dequantizing_kernels(model) -> None:
    """gptqmodel's CPU kernels (GPTQ and AWQ) choose on their first call, and for good, how they compute: called with
    gradients, they dequantize the packed integers and multiply in the compute dtype (the hypothesis described);
    called without, as the scorer calls them, a fused int4 kernel that rounds the activations to bfloat16, ~1e-2 off
    those logits, and then every later call depends on which came first. One forward pass with gradients pins the
    first (`tests/test_packed_checkpoints.py` compares the scorer's path with the dequantized twin)."""
    device = next(model.parameters()).device
    with torch.enable_grad():
        model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device), use_cache=False)


def load_tokenizer(path: str | Path):
    """A tokenizer from a local model directory, a tokenizer.json file, or a .gguf file."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(path)
    if not path.exists():
        raise UserError(f"tokenizer path {path} does not exist")
    try:
        if path.is_file() and path.suffix == ".gguf":
            check_gguf(path)
            return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
        if path.is_file() and path.suffix == ".json":
            return PreTrainedTokenizerFast(tokenizer_file=str(path))
        return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"could not load a tokenizer from {path} ({err.__class__.__name__}: {err})") from None


def lone_gguf(path: Path) -> Path:
    """A directory holding no safetensors or .bin weights but one .gguf file stands for that file."""
    if not path.is_dir() or any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin")):
        return path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) > 1:
        raise UserError(f"{path} holds several .gguf files ({', '.join(g.name for g in ggufs)}): pass the one to use")
    return ggufs[0] if ggufs else path


def directory_files(path: Path) -> list[Path]:
    """config.json, the shard index if present, then the sorted *.safetensors (else pytorch_model*.bin) files."""
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not weights:
        raise UserError(f"{path} holds no model weights (*.safetensors, *.gguf or pytorch_model*.bin)")
    if not (path / "config.json").is_file():
        raise UserError(f"{path} has weights but no config.json: the architecture is part of the model's description")
    return [path / name for name in CONFIG_FILES if (path / name).is_file()] + weights


@register_backend("hf")
class HuggingFace(Backend):
    label = "Hugging Face model directory or .gguf file"
    fallback = True  # every marked directory (quantized, QuIP#) is also a Hugging Face directory

    def can_open(self, path: Path) -> bool:
        return path.is_dir() or path.suffix == ".gguf"

    def load(self, path: Path, compute_dtype: str, device: str) -> HFLogitModel:
        return load_model(path, compute_dtype, device)

    def priced_files(self, path: Path) -> list[Path]:
        path = lone_gguf(path)
        return [path] if path.is_file() else directory_files(path)
