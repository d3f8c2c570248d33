"""LoRA: a frozen weight W0 (theta_0, from the seed) plus a trained rank-r update, W = W0 + (alpha / r) B A.

B starts at zero, so a fresh LoRA layer computes exactly what its base computes. Only A and B train.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from tokenbounds.errors import UserError
from tokenbounds.models.gpt import TokenEmbedding


def _check_rank(rank: int, rows: int, cols: int, what: str) -> None:
    if not isinstance(rank, int) or rank < 1:
        raise UserError(f"LoRA rank must be a positive integer, got {rank!r}")
    if rank > min(rows, cols):
        raise UserError(f"LoRA rank {rank} is larger than the width of {what} ({rows} x {cols})")


def _factors(rank: int, rows: int, cols: int, generator: torch.Generator) -> tuple[nn.Parameter, nn.Parameter]:
    # A ~ N(0, 1/cols) keeps A x at the scale of x; B = 0 so the update starts at zero.
    a = torch.randn(rank, cols, generator=generator) / math.sqrt(cols)
    return nn.Parameter(a), nn.Parameter(torch.zeros(rows, rank))


class LoRALinear(nn.Module):
    """y = x (W0 + s B A)^T + b, with W0 (and b) frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator, name: str = "a linear"):
        super().__init__()
        out_features, in_features = base.weight.shape
        _check_rank(rank, out_features, in_features, name)
        self.weight = nn.Parameter(base.weight.detach().clone(), requires_grad=False)
        self.bias = None if base.bias is None else nn.Parameter(base.bias.detach().clone(), requires_grad=False)
        self.lora_a, self.lora_b = _factors(rank, out_features, in_features, generator)
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The low-rank path never forms the (out, in) update: x A^T B^T costs r (in + out) per token.
        return F.linear(x, self.weight, self.bias) + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)


class LoRAEmbedding(TokenEmbedding):
    """The tied token matrix E = E0 + s B A: one effective matrix serves both the lookup and the head."""

    def __init__(self, base: TokenEmbedding, rank: int, alpha: float, generator: torch.Generator):
        vocab_size, dim = base.weight.shape
        super().__init__(vocab_size, dim)
        _check_rank(rank, vocab_size, dim, "the token embedding")
        with torch.no_grad():
            self.weight.copy_(base.weight)
        self.weight.requires_grad_(False)
        self.lora_a, self.lora_b = _factors(rank, vocab_size, dim, generator)
        self.scale = alpha / rank

    def matrix(self) -> torch.Tensor:
        return self.weight + self.scale * (self.lora_b @ self.lora_a)
