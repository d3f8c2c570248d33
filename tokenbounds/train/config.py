"""What `tokenbounds train` trains: the model (architecture and parametrization) and the trainer's TrainConfig.

Their fields are the command's flags (tokenbounds.config: declared once, with their defaults) and what a checkpoint
records as its settings, so `train --resume` can rebuild the same spec and config. No torch is imported here, so
`train --help` answers at once; building the spec imports the model code.
"""

from dataclasses import asdict, dataclass, replace

from tokenbounds.config import flag
from tokenbounds.errors import UserError
from tokenbounds.models.groups import GROUPS, KINDS_BY_GROUP, PARAMETRIZATIONS, SUBSPACE_BY_DEFAULT, canonical_group

SUBLORA_DIM = 10_000  # d of a parametrization that implies a subspace, unless --subspace-dim says otherwise
DENSE_LR = 3e-3
SUBSPACE_LR = 1e-2  # for z of any subspace run (z steps move each parameter about as much as a dense step)


def _groups_text(groups: dict[str, str]) -> str:
    return ",".join(f"{g}={k}" for g, k in groups.items())


def parse_groups(text: str, param: str) -> dict[str, str]:
    """`--groups` (GROUP or GROUP=KIND, comma-separated) -> {group: kind}; a bare group takes `param`'s kind."""

    kind = PARAMETRIZATIONS[param]["attn"]  # the kind of the named parametrization's linears
    groups = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, explicit = item.partition("=")
        group = canonical_group(name.strip())
        if explicit:
            groups[group] = explicit.strip()
        else:
            groups[group] = kind if kind in KINDS_BY_GROUP[group] else "dense"
    if not groups:
        raise UserError("--groups names no layer group")
    return groups


M, C, T = "model", "parametrization", "optimisation"


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    n_layer: int = flag(4, help="transformer blocks", group=M)
    n_head: int = flag(4, help="attention heads", group=M)
    n_embd: int = flag(128, help="width of the residual stream", group=M)
    context: int = flag(128, help="tokens of context = training window", group=M)
    dropout: float = flag(0.0, help="dropout probability while training", group=M)
    bias: bool = flag(False, help="biases in linears and LayerNorms", group=M)
    vocab_size: int | None = flag(
        None, help="output width V", group=M, default_text="the corpus tokenizer's vocabulary size"
    )
    param: str = flag(
        "sublora",
        help="the named parametrization (layer groups and kinds below); sublora = lora's groups (LoRA on attention, "
        "MLP and the tied embedding, norms dense) whose trainable numbers all live in a random subspace of dimension "
        "--subspace-dim, the quickstart's model (before this release sublora trained dense embeddings and positions "
        "instead of LoRA on the embedding: --groups attn,mlp,embed=dense,pos,norm gives that back)",
        choices=tuple(PARAMETRIZATIONS),
        group=C,
    )
    groups: str | None = flag(
        None,
        help=f"layer groups to train, comma-separated, each GROUP or GROUP=KIND; groups: {', '.join(GROUPS)} "
        "(head = embed: the tied token matrix); a bare group takes --param's kind where it allows it, else dense; "
        "others stay at their seeded initialisation",
        metavar="GROUPS",
        group=C,
        default_text="per --param: " + "; ".join(f"{k}: {_groups_text(v)}" for k, v in PARAMETRIZATIONS.items()),
    )
    rank: int = flag(4, help="LoRA rank", group=C)
    lora_alpha: float | None = flag(
        None, help="LoRA scale numerator: update = alpha/rank * B A", group=C, default_text="rank"
    )
    kron_factor: int = flag(4, help="Kronecker: W = U kron V with U k x k; k must divide the layer's sizes", group=C)
    monarch_blocks: int = flag(16, help="Monarch: number of diagonal blocks; must divide the layer's sizes", group=C)
    subspace_dim: int | None = flag(
        None,
        help="d: train only z in theta = theta_0 + sqrt(D/d) P z, P a seeded projection; any --param accepts it",
        group=C,
        default_text=f"{SUBLORA_DIM:,} for sublora, none otherwise",
    )
    subspace_terms: int = flag(1, help="Kronecker products summed in the projection P", group=C)
    init_seed: int = flag(0, help="seed of theta_0, the initialisation", group=C)
    subspace_seed: int = flag(1, help="seed of the projection P", group=C)

    def spec(self, corpus_vocab: int) -> dict:
        """The validated model spec (tokenbounds.models.parametrization) for a corpus of `corpus_vocab` ids."""
        from tokenbounds.models.gpt import GPTConfig
        from tokenbounds.models.parametrization import make_spec

        if self.vocab_size is not None and self.vocab_size < corpus_vocab:
            raise UserError(f"--vocab-size {self.vocab_size} is smaller than the corpus vocabulary {corpus_vocab}")
        arch = GPTConfig(
            vocab_size=self.vocab_size or corpus_vocab,
            context=self.context,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            dropout=self.dropout,
            bias=self.bias,
        )
        default_dim = SUBLORA_DIM if self.param in SUBSPACE_BY_DEFAULT else None
        return make_spec(
            arch,
            parse_groups(self.groups, self.param) if self.groups else PARAMETRIZATIONS[self.param],
            init_seed=self.init_seed,
            rank=self.rank,
            lora_alpha=self.lora_alpha,
            kron_factor=self.kron_factor,
            monarch_blocks=self.monarch_blocks,
            subspace_dim=self.subspace_dim if self.subspace_dim is not None else default_dim,
            subspace_seed=self.subspace_seed,
            subspace_terms=self.subspace_terms,
        )


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    steps: int = flag(1000, help="optimizer steps", group=T)
    batch_size: int = flag(16, help="windows of context+1 tokens per micro-batch", group=T)
    grad_accum: int = flag(1, help="micro-batches per optimizer step", group=T)
    lr: float | None = flag(
        None,
        help="peak AdamW learning rate",
        group=T,
        default_text=f"{SUBSPACE_LR:g} with a subspace, else {DENSE_LR:g}",
    )
    min_lr_ratio: float = flag(0.1, help="final learning rate / peak: the cosine ends at lr * min-lr-ratio", group=T)
    warmup: int = flag(50, help="linear warmup steps", group=T)
    weight_decay: float = flag(0.0, help="AdamW decoupled weight decay on matrices (never on vectors or z)", group=T)
    beta1: float = flag(0.9, help="AdamW beta1", cli=False)
    beta2: float = flag(0.99, help="AdamW beta2", cli=False)
    grad_clip: float = flag(1.0, help="max global gradient norm, 0 = off", group=T)
    eval_every: int = flag(200, help="steps between evaluations", group=T)
    eval_batches: int = flag(8, help="batches per evaluation", group=T)
    checkpoint_every: int = flag(500, help="steps between checkpoints (the last step always saves)", group=T)
    seed: int = flag(
        0,
        help="seed of the data order, the evaluation windows and dropout, each from its own stream of it, "
        "independent of the units `bound --seed` draws with the same seed",
        group=T,
    )
    bf16: bool = flag(
        False,
        help="bfloat16 autocast in the forward pass (fast on CPUs with AVX512-BF16 or AMX; parameters, optimizer "
        "and loss stay float32)",
        group=T,
    )

    # These change only when evaluations and checkpoints happen, not what is trained.
    NON_TRAJECTORY = ("eval_every", "eval_batches", "checkpoint_every")

    def __post_init__(self):
        from tokenbounds.streams import check_seed  # numpy: not needed to build --help

        for name in ("steps", "batch_size", "grad_accum", "eval_every", "eval_batches", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise UserError(f"warmup must be >= 0, got {self.warmup}")
        if self.lr is not None and not self.lr > 0:
            raise UserError(f"learning rate must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise UserError("weight decay and gradient clip must be >= 0")
        check_seed(self.seed)

    def for_spec(self, spec: dict) -> "TrainConfig":
        """This config with lr None replaced by its default for `spec`: SUBSPACE_LR when z is trained, else DENSE_LR."""
        if self.lr is not None:
            return self
        lr = SUBSPACE_LR if spec["subspace"] is not None else DENSE_LR
        return replace(self, lr=lr)

    def to_dict(self) -> dict:
        return asdict(self)
