"""A Kronecker-factored linear layer: W = U kron V, with U (k x k) and V (out/k x in/k).

With x seen as a (k, in/k) matrix X (row-major), (U kron V) vec(X) = vec(U X V^T), so the layer costs
two small matmuls and k^2 + out*in/k^2 parameters instead of out*in.
"""

import math

import torch
from torch import nn

from tokenbounds.errors import UserError


class KroneckerLinear(nn.Module):
    def __init__(
        self, in_features: int, out_features: int, factor: int, bias: bool, generator: torch.Generator, name: str = ""
    ):
        super().__init__()
        if not isinstance(factor, int) or factor < 1:
            raise UserError(f"Kronecker factor must be a positive integer, got {factor!r}")
        if in_features % factor or out_features % factor:
            raise UserError(
                f"Kronecker factor {factor} does not factor {name or 'a layer'} ({out_features} x {in_features}): "
                "it must divide both sizes"
            )
        self.in_features, self.out_features, self.factor = in_features, out_features, factor
        # Each entry of W is a product u * v: factors with std sqrt(0.02) give W the usual N(0, 0.02^2) scale.
        std = math.sqrt(0.02)
        self.u = nn.Parameter(torch.randn(factor, factor, generator=generator) * std)
        self.v = nn.Parameter(torch.randn(out_features // factor, in_features // factor, generator=generator) * std)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        grid = x.reshape(*lead, self.factor, self.in_features // self.factor)
        y = (self.u @ grid @ self.v.T).reshape(*lead, self.out_features)  # U X V^T
        return y if self.bias is None else y + self.bias

    def dense_weight(self) -> torch.Tensor:
        return torch.kron(self.u, self.v)
