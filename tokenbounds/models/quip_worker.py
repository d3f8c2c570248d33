"""Serve next-token logits of a QuIP# checkpoint, decoded by a quip-sharp checkout, over stdin/stdout.

Run by `tokenbounds bound --quip-sharp DIR` with the Python of the environment quip-sharp was built in
(`--quip-python`): quip-sharp pins its own torch and transformers (2.1 / 4.34) and CUDA kernels, which cannot share a
process with tokenbounds' versions. So this file imports nothing from tokenbounds: only the standard library, numpy,
torch and the quip-sharp checkout. The statistics stay in tokenbounds, which sends token ids and receives raw logits.

Protocol: every message is one array in .npy format (a numpy.lib.format header, then the raw C-ordered data; never
pickles).
- worker -> client, once: a uint8 array holding UTF-8 JSON, the model's description, or {"error": "..."}.
- client -> worker, repeated: input ids (B, T) int64, then kept positions (K,) int64.
- worker -> client: logits (B, K, V) at the kept positions, float16 when the model's head is float16 and that is
  exact, float32 otherwise; or a uint8 JSON {"error": "..."}.
The worker exits when its stdin closes.

Before quip-sharp loads anything, every checkpoint file is opened without executing code: safetensors headers are
parsed as JSON, and .bin pickles must load with torch.load(weights_only=True) (transformers 4.34 would unpickle them
with code execution allowed). After loading, the model's state must hold exactly the checkpoint's tensors: a tensor
the architecture does not use, or a parameter the checkpoint lacks (randomly initialised), is refused.
"""

from __future__ import annotations  # quip-sharp's environment may be an older Python than tokenbounds needs

import sys
from pathlib import Path

# Run as a script, Python puts this file's folder (tokenbounds/models) first on sys.path, where base.py, hf.py, ...
# could shadow modules quip-sharp imports. Drop it before importing anything else.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def checkpoint_tensor_names(model_dir: Path) -> set[str]:
    """Tensor names stored in the checkpoint, read without executing anything."""
    names: set[str] = set()
    safetensors = sorted(model_dir.glob("*.safetensors"))
    for path in safetensors:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        names.update(k for k in header if k != "__metadata__")
    if safetensors:
        return names
    for path in sorted(model_dir.glob("pytorch_model*.bin")):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # an unpickling error means the file holds more than tensors
            raise ValueError(
                f"{path.name} does not load with weights_only=True ({err.__class__.__name__}): refusing"
            ) from None
        names.update(state)
    if not names:
        raise ValueError(f"{model_dir} holds no *.safetensors or pytorch_model*.bin weights")
    return names


def check_state_matches(model: torch.nn.Module, stored: set[str]) -> None:
    """The loaded model's state is exactly the stored tensors (a parameter tied to a stored one counts as stored)."""
    state = model.state_dict()
    stored_pointers = {state[name].data_ptr() for name in stored if name in state}
    missing = sorted(n for n in state if n not in stored and state[n].data_ptr() not in stored_pointers)
    unused = sorted(stored - set(state))
    for what, names in (("missing from the checkpoint", missing), ("not used by the model", unused)):
        if names:
            raise ValueError(
                f"{len(names)} tensor(s) {what}: {', '.join(names[:3])}; refusing a partially loaded model"
            )


def load(quip_sharp: Path, model_dir: Path, device: str):
    stored = checkpoint_tensor_names(model_dir)
    sys.path.insert(0, str(quip_sharp))
    from lib.utils.unsafe_import import model_from_hf_path  # quip-sharp's own loader, whatever its version

    module_file = Path(inspect.getfile(model_from_hf_path)).resolve()
    if quip_sharp.resolve() not in module_file.parents:
        raise ValueError(f"imported quip-sharp from {module_file}, not from {quip_sharp}")
    # A {"": device} map places the whole model on one device in every transformers version quip-sharp has pinned.
    offered = {
        "use_cuda_graph": False,
        "use_flash_attn": False,
        "device_map": "auto" if device == "auto" else {"": device},
    }
    accepted = inspect.signature(model_from_hf_path).parameters
    model, base_name = model_from_hf_path(str(model_dir), **{k: v for k, v in offered.items() if k in accepted})
    if device != "auto" and not hasattr(model, "hf_device_map"):  # placed by accelerate already: leave it there
        model = model.to(device)
    model.eval()
    check_state_matches(model, stored)
    config = model.config
    head = model.get_output_embeddings()
    description = {
        "architecture": type(model).__name__,
        "base_model": str(base_name),
        "n_stored_values": sum(t.numel() for t in model.state_dict().values()),
        "vocab_size": int(head.weight.shape[0]) if head is not None else int(config.vocab_size),
        "max_positions": getattr(config, "max_position_embeddings", None),
        "compute_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "device": str(model.get_input_embeddings().weight.device),
        "quip_params": getattr(config, "quip_params", None),
        "torch": torch.__version__,
        "transformers": sys.modules["transformers"].__version__ if "transformers" in sys.modules else None,
    }
    return model, description


def receive(pipe) -> np.ndarray | None:
    """The next array from `pipe`, or None at end of input. Raises ValueError on a partial or malformed message.

    The .npy header is parsed by numpy; the data is read straight into the array's memory (pipes cannot seek,
    which numpy.load needs, and numpy's own streaming path copies in 256 KiB pieces).
    """
    if not pipe.peek(1)[:1]:
        return None
    version = np.lib.format.read_magic(pipe)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in read_header:
        raise ValueError(f"unsupported .npy version {version}")
    shape, fortran_order, dtype = read_header[version](pipe)
    if fortran_order or dtype.hasobject:
        raise ValueError("expected a C-ordered array of numbers")
    array = np.empty(shape, dtype=dtype)
    view, filled = memoryview(array.reshape(-1)).cast("B"), 0
    while filled < len(view):
        got = pipe.readinto(view[filled:])
        if not got:
            raise ValueError(f"the message ended after {filled} of {len(view)} bytes")
        filled += got
    return array


def send(pipe, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    np.lib.format.write_array_header_1_0(pipe, np.lib.format.header_data_from_array_1_0(array))
    pipe.write(memoryview(array.reshape(-1)).cast("B"))
    pipe.flush()


def widen(pipe) -> None:
    """Ask Linux for a 1 MiB pipe buffer (default 64 KiB): fewer context switches per logits message."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError, ValueError):
        pass  # not Linux, or not a pipe: the default works, only slower


def send_json(pipe, payload: dict) -> None:
    send(pipe, np.frombuffer(json.dumps(payload).encode(), dtype=np.uint8))


def serve(model, inbox, out) -> None:
    device = model.get_input_embeddings().weight.device
    head = model.get_output_embeddings()
    half_head = head is not None and head.weight.dtype == torch.float16
    while True:
        ids = receive(inbox)
        if ids is None:
            return
        keep = receive(inbox)  # sorted and unique, so all T positions means every position
        try:
            with torch.inference_mode():
                logits = model(input_ids=torch.from_numpy(ids).to(device), use_cache=False).logits
                if len(keep) != logits.shape[1]:
                    logits = logits[:, torch.from_numpy(keep).to(device)]
                if logits.dtype != torch.float16:
                    logits = logits.float()
                if half_head and logits.dtype == torch.float32:
                    # A float16 head's logits, upcast by the model, travel as float16: half the bytes, nothing lost.
                    half = logits.half()
                    logits = half if torch.equal(half.float(), logits) else logits
                picked = logits.cpu().numpy()
        except Exception as err:  # e.g. out of GPU memory: report it, the client stops
            send_json(out, {"error": f"{err.__class__.__name__}: {err}"})
            return
        send(out, picked)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quip-sharp", required=True, type=Path, help="a quip-sharp checkout with its kernels built")
    parser.add_argument("--model", required=True, type=Path, help="a QuIP# checkpoint directory")
    parser.add_argument("--device", default="cuda", help="torch device, or auto (accelerate spreads over GPUs)")
    args = parser.parse_args()
    # The protocol owns the real stdout; anything quip-sharp or transformers print goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=1 << 20)
    widen(out)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        model, description = load(args.quip_sharp, args.model, args.device)
    except Exception as err:  # every failure becomes one line for the client
        send_json(out, {"error": f"{err.__class__.__name__}: {err}"})
        return 1
    send_json(out, description)
    serve(model, sys.stdin.buffer, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
