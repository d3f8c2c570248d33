"""QuIP# checkpoints (the paper's LLaMA-1/2 at 2, 3 and 4 bits), evaluated by the user's quip-sharp checkout.

A QuIP# checkpoint (config.json carries `quip_params`) stores each linear layer as E8P lattice-codebook indices,
sign vectors and scales. Its decoder (codebooks, randomized Hadamard transforms, fused layers) and CUDA kernels live
in quip-sharp (github.com/Cornell-RelaxML/quip-sharp, GPL-3.0), not in transformers, and quip-sharp pins torch 2.1 and
transformers 4.34. So tokenbounds neither ships nor imports it: `bound --quip-sharp DIR --quip-python PY` starts
`quip_worker.py` under the Python of quip-sharp's environment, sends it token ids and gets raw logits back; the
scorer and the statistics are the same as for every other model.

Backend "quip-sharp": a directory whose config.json has `quip_params`. It runs in quip-sharp's own compute dtype and
refuses --compute-dtype bfloat16; its priced files are those of a Hugging Face directory.

The hypothesis is "these checkpoint files, decoded by quip-sharp at commit C, evaluated in its compute dtype". The
decoder is fixed before the data is seen, so the prior is the description length of the checkpoint files
(`--checkpoint-size`, the paper's recipe); the commit is recorded in the report.
"""

import json
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import torch

from tokenbounds.architecture import dense_parameter_count, packed_format
from tokenbounds.errors import UserError
from tokenbounds.models.base import description
from tokenbounds.models.hf import directory_files
from tokenbounds.models.quip_worker import receive, send, widen
from tokenbounds.models.registry import Backend, register_backend

WORKER = Path(__file__).with_name("quip_worker.py")


def is_quip_checkpoint(path: str | Path) -> bool:
    """A directory whose config.json has `quip_params` (what quip-sharp's own loader looks for)."""
    return packed_format(path) == "QuIP#"


def _git_commit(directory: Path) -> dict:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "modified": None if status is None else bool(status)}


class QuipSharpModel:
    """A `LogitModel` whose forward passes run in a quip-sharp worker process."""

    def __init__(self, path: str | Path, quip_sharp: str | Path, python: str, device: str):
        self.path, self.quip_sharp = Path(path), Path(quip_sharp)
        if not (self.quip_sharp / "lib" / "utils" / "unsafe_import.py").is_file():
            raise UserError(
                f"{self.quip_sharp} is not a quip-sharp checkout (no lib/utils/unsafe_import.py); "
                "clone github.com/Cornell-RelaxML/quip-sharp and build its kernels"
            )
        self._hint = " (QuIP#'s kernels run on NVIDIA GPUs: pass --device cuda)" if device == "cpu" else ""
        self.decoder = {"quip_sharp": str(self.quip_sharp.resolve()), **_git_commit(self.quip_sharp)}
        command = [python, str(WORKER), "--quip-sharp", str(self.quip_sharp), "--model", str(self.path)]
        try:
            # stderr is inherited: quip-sharp's own messages and warnings reach the user as they are.
            self._worker = subprocess.Popen(
                [*command, "--device", device], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        except OSError as err:
            raise UserError(f"could not start the quip-sharp worker with {python} ({err})") from None
        weakref.finalize(self, _stop, self._worker)
        widen(self._worker.stdin)
        self.info = self._receive("loading the checkpoint")
        if "error" in self.info:
            _stop(self._worker)
            raise UserError(f"quip-sharp could not load {self.path}: {self.info['error']}{self._hint}")
        self.n_weights = dense_parameter_count(self.path)  # the weights the packed indices stand for
        self.vocab_size = int(self.info["vocab_size"])
        self.max_positions = self.info["max_positions"]
        self.fills_out = False  # the logits arrive from the worker process

    def _receive(self, doing: str) -> np.ndarray | dict:
        try:
            reply = receive(self._worker.stdout)
        except (ValueError, OSError):  # a partial message: the worker died while writing it
            reply = None
        if reply is None:
            code = self._worker.wait()
            raise UserError(f"the quip-sharp worker stopped while {doing} (exit status {code}); see its messages above")
        if reply.dtype == np.uint8:
            return json.loads(reply.tobytes())
        return reply

    def logits(self, input_ids: torch.Tensor, keep: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        try:
            send(self._worker.stdin, input_ids.cpu().numpy().astype(np.int64))
            send(self._worker.stdin, keep.cpu().numpy().astype(np.int64))
        except (BrokenPipeError, OSError):
            self._receive("scoring")  # collects the worker's exit status and raises
        reply = self._receive("scoring")
        if isinstance(reply, dict):
            raise UserError(f"quip-sharp failed while scoring: {reply.get('error')}{self._hint}")
        if reply.shape != (input_ids.shape[0], keep.shape[0], self.vocab_size):
            raise UserError(f"the quip-sharp worker answered logits of shape {reply.shape}; expected another")
        return torch.from_numpy(reply).float()

    def describe(self) -> dict:
        return description(
            backend="quip-sharp",
            source=str(self.path),
            format="QuIP# (decoded and evaluated by quip-sharp in a worker process)",
            architecture=self.info["architecture"],
            n_parameters=self.n_weights,
            vocab_size=self.vocab_size,
            compute_dtype=self.info["compute_dtype"],
            device=self.info["device"],
            details={
                "base_model": self.info["base_model"],
                "n_stored_values": self.info["n_stored_values"],
                "quip_params": self.info["quip_params"],
                "decoder": {**self.decoder, "torch": self.info["torch"], "transformers": self.info["transformers"]},
            },
        )


@register_backend("quip-sharp")
class QuipSharp(Backend):
    label = "QuIP# checkpoint (config.json has quip_params)"
    # float32 is the default request, read here as "none": describe() records the dtype quip-sharp ran in.
    compute_dtypes = ("float32",)
    dtype_refusal = "QuIP# models run in quip-sharp's own compute dtype (recorded in the report); drop --compute-dtype"
    options = ("quip_sharp", "quip_python")

    def can_open(self, path: Path) -> bool:
        return is_quip_checkpoint(path)

    def load(self, path: Path, compute_dtype: str, device: str, quip_sharp=None, quip_python=None) -> QuipSharpModel:
        if quip_sharp is None:
            raise UserError(
                f"{path} is a QuIP# checkpoint (config.json has quip_params): its decoder and CUDA kernels are in "
                "quip-sharp; pass --quip-sharp DIR (a built checkout) and --quip-python PYTHON (its environment)"
            )
        return QuipSharpModel(path, quip_sharp, quip_python or sys.executable, device)

    def priced_files(self, path: Path) -> list[Path]:
        return directory_files(path)


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        try:
            worker.stdin.close()  # the worker exits on end of input
            worker.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            worker.kill()
