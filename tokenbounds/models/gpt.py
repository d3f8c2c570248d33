"""A compact GPT (the nanoGPT architecture) whose token embedding is, by construction, also its output head.

Token + learned position embeddings, pre-LayerNorm blocks (causal self-attention, GELU MLP), a final LayerNorm
and the head `logits = h @ E^T` with E the token embedding matrix. The tie is explicit: there is no separate head
parameter, the embedding module hands out one matrix to both uses, so no state-dict round trip or parametrization
can break it.
"""

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from tokenbounds.errors import UserError
from tokenbounds.models.base import COMPUTE_DTYPES, description


@dataclass(frozen=True)
class GPTConfig:
    """Architecture of the GPT; JSON-serialisable through `to_dict` / `from_dict`."""

    vocab_size: int
    context: int = 128  # the longest input (number of learned positions)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in linears and LayerNorms (nanoGPT's option; off is smaller and as good)

    def __post_init__(self):
        for name in ("vocab_size", "context", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"model {name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise UserError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UserError(f"unknown GPT config keys: {', '.join(sorted(unknown))}")
        return cls(**data)


class TokenEmbedding(nn.Module):
    """The (V, E) token matrix, used to embed input ids and, transposed, as the output head (the tie)."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, dim))

    def matrix(self) -> torch.Tensor:
        return self.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.matrix())

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.matrix())


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        # (B, T, E) -> (B, H, T, E/H)
        q, k, v = (t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        y = y.transpose(1, 2).reshape(batch, length, width)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """forward(ids (B, T), keep=None) -> logits (B, T, V), or (B, K, V) at positions `keep` only."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = TokenEmbedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.context, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)

    def forward(self, ids: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        length = ids.shape[1]
        if length > self.config.context:
            raise ValueError(f"input of {length} tokens exceeds the model's context {self.config.context}")
        positions = torch.arange(length, device=ids.device)
        x = self.drop(self.wte(ids) + self.wpe(positions))
        for block in self.blocks:
            x = block(x)
        if keep is not None:
            x = x[:, keep]  # the head is the largest matmul: apply it only where logits are wanted
        return self.wte.head(self.ln_f(x))


def init_gpt_(model: GPT, generator: torch.Generator) -> None:
    """nanoGPT's initialisation, drawn from `generator` in module order, so theta_0 is a function of the seed.

    Linears and embeddings ~ N(0, 0.02); residual output projections ~ N(0, 0.02 / sqrt(2 n_layer)) (GPT-2);
    biases 0; LayerNorm weights 1.
    """
    residual_std = 0.02 / math.sqrt(2 * model.config.n_layer)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith(".proj") else 0.02
                nn.init.normal_(module.weight, 0.0, std, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, (nn.Embedding, TokenEmbedding)):
                nn.init.normal_(module.weight, 0.0, 0.02, generator=generator)
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                if module.bias is not None:
                    module.bias.zero_()


class GPTLogitModel:
    """The `LogitModel` view of a trained GPT in any parametrization: eval mode, no gradients, float32 logits.

    `model` is what `build_model` returns (with its free parameters loaded). A subspace model is materialised once
    (theta_0 + P z written into the network, in float32), so evaluation does not recompute the projection per batch;
    then the network is cast to the compute dtype (base.py: what a compute dtype means).
    """

    def __init__(
        self,
        model: nn.Module,
        spec: dict,
        source: str | None = None,
        compute_dtype: str = "float32",
        fmt: str = "tokenbounds-gpt directory (spec.json + free_parameters.safetensors)",
    ):
        self.free_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        materialize = getattr(model, "materialize", None)
        network = materialize() if materialize is not None else model
        self.model = network.to(COMPUTE_DTYPES[compute_dtype]).eval()
        self.spec, self.source, self.format, self.compute_dtype = spec, source, fmt, compute_dtype
        self.vocab_size = int(spec["arch"]["vocab_size"])
        self.max_positions = int(spec["arch"]["context"])
        self.fills_out = False  # the logits are the network's own fresh tensor

    def logits(self, input_ids: torch.Tensor, keep: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(input_ids, keep=keep).float()

    def describe(self) -> dict:
        return description(
            backend="tokenbounds-gpt",
            source=self.source,
            format=self.format,
            architecture="GPT",
            n_parameters=sum(p.numel() for p in self.model.parameters()),
            vocab_size=self.vocab_size,
            compute_dtype=self.compute_dtype,
            device="cpu",
            details={"spec": self.spec, "free_parameters": self.free_parameters},
        )
