"""A Monarch linear layer (Dao et al. 2022): two block-diagonal factors with a fixed permutation between them.

For b blocks, W = L P R with
  R = blockdiag(R_1..R_b),      R_i: (out/b x in/b)   -- mixes within each of b input groups,
  P the transpose permutation of an (b, out/b) grid to (out/b, b),
  L = blockdiag(L_1..L_{out/b}), L_j: (b x b)          -- mixes across groups.
Parameters: out*in/b + out*b instead of out*in (about 2 n^1.5 at b = sqrt(n)).
"""

import math

import torch
from torch import nn

from tokenbounds.errors import UserError


class MonarchLinear(nn.Module):
    def __init__(
        self, in_features: int, out_features: int, blocks: int, bias: bool, generator: torch.Generator, name: str = ""
    ):
        super().__init__()
        if not isinstance(blocks, int) or blocks < 1:
            raise UserError(f"Monarch blocks must be a positive integer, got {blocks!r}")
        if in_features % blocks or out_features % blocks:
            raise UserError(
                f"Monarch with {blocks} blocks does not factor {name or 'a layer'} ({out_features} x {in_features}): "
                "the number of blocks must divide both sizes"
            )
        self.in_features, self.out_features, self.blocks = in_features, out_features, blocks
        inner = out_features // blocks
        # The path from an input to an output crosses one R entry and one L entry: std sqrt(0.02) each
        # (with the fan-in of R and L together equal to in_features) gives outputs at a dense N(0, 0.02) layer's scale.
        std = math.sqrt(0.02)
        self.right = nn.Parameter(torch.randn(blocks, inner, in_features // blocks, generator=generator) * std)
        self.left = nn.Parameter(torch.randn(inner, blocks, blocks, generator=generator) * std)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        groups = x.reshape(-1, self.blocks, self.in_features // self.blocks)  # (N, b, in/b)
        h = torch.einsum("nbi,boi->nbo", groups, self.right)  # R: (N, b, out/b)
        h = h.transpose(1, 2)  # P: (N, out/b, b)
        y = torch.einsum("njb,jcb->njc", h, self.left)  # L: (N, out/b, b)
        return y.reshape(*lead, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._mix(x)
        return y if self.bias is None else y + self.bias

    def dense_weight(self) -> torch.Tensor:
        return self._mix(torch.eye(self.in_features, dtype=self.right.dtype)).T
