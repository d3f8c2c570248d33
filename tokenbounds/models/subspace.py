"""Training in a random subspace: the trainable parameters are theta = theta_0 + sqrt(D/d) P z; only z is learned.

The factor sqrt(D/d) (D trainable numbers behind the projection, d = dim z) makes a step of size eta in every
coordinate of z move each parameter by about eta in root mean square, as a dense Adam step does; so one learning
rate suits every d and D (without it the best rate grows like sqrt(D/d)).

P (D x d) is a seeded structured random projection that is never stored: the sum of `terms` Kronecker products
of small random orthonormal factors,

    P = (1/sqrt(terms)) * sum_t Pi_t (Q1_t kron Q2_t)[:D, :d],     Q1_t: (D1 x d1), Q2_t: (D2 x d2),

with D1 * D2 >= D, d1 * d2 >= d, Pi_0 = identity and Pi_t (t > 0) seeded random permutations of the D
coordinates. Each Kronecker product has exactly orthonormal columns before its rows are cut to D; with one term
and D1 * D2 == D, P^T P = I exactly. P z = vec(Q1 Z Q2^T) costs O(D sqrt(d)) time and O(sqrt(D d)) memory, so
d up to 1e6 fits on a CPU. The extra terms with permutations break the block pattern of a single product (where
every run of D2 consecutive parameters moves only inside one fixed d2-dimensional span) at near-orthonormality.

theta_0 is whatever the wrapped network holds when wrapped (the seeded initialisation), so the message is z
plus the seed; the wrapper is the parent module of the network, so train() / eval() reach every dropout.
"""

import math

import torch
from torch import nn
from torch.func import functional_call

from tokenbounds.errors import UserError


def _orthonormal(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """A (rows x cols) matrix with orthonormal columns, Haar-distributed (QR of a Gaussian, signs fixed)."""
    gauss = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    return (q * torch.sign(torch.diagonal(r))).to(torch.float32)


class KroneckerProjection(nn.Module):
    """z (d,) -> P z (D,). Deterministic given (D, d, seed, terms); holds its factors as non-persistent buffers."""

    def __init__(self, n_params: int, dim: int, seed: int, terms: int = 1):
        super().__init__()
        if dim < 1:
            raise UserError(f"subspace dimension must be >= 1, got {dim}")
        if dim > n_params:
            raise UserError(f"subspace dimension {dim} is larger than the number of trainable parameters {n_params}")
        if terms < 1:
            raise UserError(f"the projection needs at least one Kronecker term, got {terms}")
        self.n_params, self.dim, self.terms = n_params, dim, terms
        self.rows2 = math.ceil(math.sqrt(n_params))
        self.rows1 = math.ceil(n_params / self.rows2)
        # d2 <= D2 and d1 = ceil(d / d2) <= D1 whenever d <= D, so both factors can have orthonormal columns.
        self.cols2 = min(self.rows2, math.ceil(math.sqrt(dim)))
        self.cols1 = math.ceil(dim / self.cols2)
        generator = torch.Generator().manual_seed(seed)
        for t in range(terms):
            self.register_buffer(f"q1_{t}", _orthonormal(self.rows1, self.cols1, generator), persistent=False)
            self.register_buffer(f"q2_{t}", _orthonormal(self.rows2, self.cols2, generator), persistent=False)
            if t > 0:
                self.register_buffer(f"perm_{t}", torch.randperm(n_params, generator=generator), persistent=False)

    def _term(self, t: int, grid: torch.Tensor) -> torch.Tensor:
        q1, q2 = getattr(self, f"q1_{t}"), getattr(self, f"q2_{t}")
        out = (q1 @ grid @ q2.T).reshape(-1)[: self.n_params]  # vec(Q1 Z Q2^T) = (Q1 kron Q2) vec(Z)
        return out if t == 0 else out[getattr(self, f"perm_{t}")]

    @torch.autocast("cpu", enabled=False)  # theta = theta_0 + P z in float32 even inside a bfloat16 forward
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        padded = torch.nn.functional.pad(z, (0, self.cols1 * self.cols2 - self.dim))
        grid = padded.view(self.cols1, self.cols2)
        total = self._term(0, grid)
        for t in range(1, self.terms):
            total = total + self._term(t, grid)
        return total if self.terms == 1 else total / math.sqrt(self.terms)

    def matrix(self) -> torch.Tensor:
        """P as an explicit (D x d) matrix, from the factors with torch.kron (for tests; small D only)."""
        total = torch.zeros(self.n_params, self.dim)
        for t in range(self.terms):
            full = torch.kron(getattr(self, f"q1_{t}"), getattr(self, f"q2_{t}"))[: self.n_params, : self.dim]
            total += full if t == 0 else full[getattr(self, f"perm_{t}")]
        return total / math.sqrt(self.terms)


class SubspaceModel(nn.Module):
    """Wraps a network: its trainable tensors become theta_0 + sqrt(D/d) P z (theta_0 frozen); z alone trains."""

    def __init__(self, net: nn.Module, dim: int, seed: int, terms: int = 1):
        super().__init__()
        self.net = net
        trainable = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
        if not trainable:
            raise UserError("the subspace needs at least one trainable parameter group")
        self.names = [name for name, _ in trainable]
        self.shapes = [p.shape for _, p in trainable]
        self.sizes = [p.numel() for _, p in trainable]
        self.register_buffer("theta0", torch.cat([p.detach().reshape(-1) for _, p in trainable]), persistent=False)
        for _, p in trainable:
            p.requires_grad_(False)
        self.projection = KroneckerProjection(sum(self.sizes), dim, seed, terms)
        self.step_scale = math.sqrt(sum(self.sizes) / dim)
        self.z = nn.Parameter(torch.zeros(dim))

    @property
    def n_projected(self) -> int:
        return self.projection.n_params

    def projected_parameters(self) -> dict[str, torch.Tensor]:
        """The network's trainable tensors at the current z: {name: slice of theta_0 + sqrt(D/d) P z}."""
        flat = self.theta0 + self.step_scale * self.projection(self.z)
        return {
            name: chunk.view(shape)
            for name, chunk, shape in zip(self.names, flat.split(self.sizes), self.shapes, strict=True)
        }

    def forward(self, *args, **kwargs):
        return functional_call(self.net, self.projected_parameters(), args, kwargs)

    def materialize(self) -> nn.Module:
        """The network with theta_0 + P z written into its tensors (for fast repeated evaluation)."""
        with torch.no_grad():
            for name, value in self.projected_parameters().items():
                self.net.get_parameter(name).copy_(value)
        return self.net
