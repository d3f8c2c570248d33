"""The one interface every model backend implements, so the scorer never needs to know which it is."""

from typing import Protocol

import torch


class LogitModel(Protocol):
    """A causal language model seen as: token ids in, next-token logits out at chosen positions."""

    vocab_size: int  # V: the width of the logits (may exceed the tokenizer's size)
    max_positions: int | None  # the longest input the model accepts, None if unbounded

    def logits(self, input_ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, V) at sequence positions `keep` (sorted, unique, shape (K,)) for input (B, T).

        Position j's logits predict token j+1 and must depend on input_ids[:, :j+1] only (causal), so a
        right-padded batch needs no attention mask.
        """
        ...

    def describe(self) -> dict:
        """What the hypothesis is: source path, architecture, compute dtype, parameter count."""
        ...
