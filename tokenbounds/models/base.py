"""The one interface every model backend implements, so the scorer never needs to know which it is.

Compute dtype, one meaning for every backend: "bfloat16" casts the weights to bfloat16 and runs the whole forward
pass in bfloat16; the logits are handed back in float32, so the scorer's log-softmax is float32 whatever the compute
dtype ("float32": weights and forward pass in float32). It is part of the hypothesis and recorded in its description.
A backend that cannot honour a dtype lists the ones it can (`Backend.compute_dtypes`) and the registry refuses the
others.
"""

from typing import Protocol

import torch

from tokenbounds.errors import UserError

COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# What every `describe()` returns, for every backend: the report's "hypothesis" record has one shape.
DESCRIPTION_KEYS = (
    "backend",  # the registered backend that computes the logits ("hf", "tokenbounds-gpt", "quip-sharp")
    "source",  # the path given
    "format",  # what the path holds, in words
    "architecture",  # the network's class
    "n_parameters",  # weights the hypothesis has (a packed format: the weights its integers stand for)
    "vocab_size",  # V: the width of the logits
    "compute_dtype",  # the dtype the forward pass ran in (see above)
    "device",  # where it ran
    "details",  # a dict of what only this backend has (a GPT's spec, a QuIP# decoder's commit, ...)
)


class LogitModel(Protocol):
    """A causal language model seen as: token ids in, next-token logits out at chosen positions."""

    vocab_size: int  # V: the width of the logits (may exceed the tokenizer's size)
    max_positions: int | None  # the longest input the model accepts, None if unbounded
    fills_out: bool  # whether `logits` writes into the `out` it is given (the scorer only then keeps a buffer)

    def logits(self, input_ids: torch.Tensor, keep: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Float32 logits (B, K, V) at sequence positions `keep` (sorted, unique, shape (K,)) for input (B, T).

        Position j's logits predict token j+1 and must depend on input_ids[:, :j+1] only (causal), so a
        right-padded batch needs no attention mask.

        `out`, if given, is a float32 (B, K, V) tensor on the model's device that a backend with `fills_out` writes
        the logits into and returns, sparing a fresh multi-hundred-MB tensor per batch (the others ignore it). The
        values are the same either way, and a caller that passes `out` again overwrites what it returned before.
        """
        ...

    def describe(self) -> dict:
        """What the hypothesis is: a dict with exactly the `DESCRIPTION_KEYS` (built by `description`)."""
        ...


def description(**fields) -> dict:
    """A `describe()` record; refuses (a bug, not a user error) a field set other than `DESCRIPTION_KEYS`."""
    if set(fields) != set(DESCRIPTION_KEYS):
        raise TypeError(f"a description has the keys {DESCRIPTION_KEYS}; got {sorted(fields)}")
    if not isinstance(fields["details"], dict):
        raise TypeError("a description's details is a dict")
    return {key: fields[key] for key in DESCRIPTION_KEYS}


AUTO_DEVICE = "auto"  # a Hugging Face model spread over every visible GPU by accelerate's device map


def check_device(device: str) -> str:
    """A torch device string that exists on this machine (cpu, cuda, cuda:1, mps), or "auto" where GPUs are visible."""
    if device == AUTO_DEVICE:
        if not torch.cuda.is_available():
            raise UserError(
                "device 'auto' spreads a model over the visible GPUs, but torch sees no CUDA GPU here; use cpu"
            )
        return device
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but torch sees no CUDA GPU here")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {device!r} requested but MPS is not available here")
    return device


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX). Elsewhere (AVX2 alone, say) a bfloat16
    matmul is emulated: 1-2 GFLOP/s against 110-120 in float32 on an AMD EPYC with AVX2 only."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
