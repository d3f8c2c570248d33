"""The Markov study's configuration and its named sizes (no torch here: `study markov --help` lists them).

default: chains of order k in (0, 1, 2, 3, 4, 6, 8, 16) and 2 x 64 dense GPTs with context k (k >= 1), 250 steps of
    2,048 target tokens each, 16 k-means levels, 4,000 tokens per bound: 15 rows, 4 min 24 s of CPU time with one
    thread on a 2-core AMD EPYC (AVX2 only), 24 min of wall time while other jobs loaded it (load average ~12).
paper: paper-scale transformers (12 x 768, GPT-2 small's shape) trained 10,000 steps of 16,384 tokens at each
    context, orders up to 128, on a corpus given with --data (OpenWebText in GPT-2 tokens, say); not measured.
smallest: orders (0, 1, 2) on the corpus' first 2 works, 1 x 16 GPTs, 20 steps, 1,000 tokens per bound: about 15 s
    of CPU time, for CI; valid, far from tight.

The transformer's recipe (dense weights, 16 k-means levels, the trainer's default learning rate for dense weights)
was fixed before this study ran, not tuned on it: no extra bits are paid for it.
"""

from dataclasses import dataclass, replace

MODELS = ("markov", "gpt")  # the order rows run in: every chain, then every GPT


@dataclass(frozen=True)
class MarkovConfig:
    orders: tuple[int, ...] = (0, 1, 2, 3, 4, 6, 8, 16)  # the k grid: a chain at every k, a GPT at every k >= 1
    pseudo_count: float = 1.0  # a: p(y | c) = (n(c, y) + a / V) / (n(c) + a), fixed in advance
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    param: str = "dense"
    steps: int = 250
    tokens_per_step: int = 2048  # target tokens per step: ceil(tokens_per_step / k) windows of k + 1 tokens
    warmup: int = 20
    levels: int = 16  # the GPT's weights, coded at this many k-means levels
    samples: int = 4000  # tokens drawn per bound (token mode, document rule, context k)
    delta: float = 0.05
    seed: int = 0
    data: str | None = None  # a shard directory from `prepare`; None: the embedded Shakespeare as bytes
    works: int | None = None  # without data: only the embedded corpus' first works (None: all 42)
    models: tuple[str, ...] = MODELS


DEFAULT = MarkovConfig()
SIZES = {
    "smallest": replace(DEFAULT, orders=(0, 1, 2), n_layer=1, n_embd=16, steps=20, warmup=2, samples=1000, works=2),
    "default": DEFAULT,
    "paper": replace(
        DEFAULT,
        orders=(0, 1, 2, 3, 4, 6, 8, 16, 32, 64, 128),
        n_layer=12,
        n_head=12,
        n_embd=768,
        steps=10_000,
        tokens_per_step=16_384,
        warmup=200,
    ),
}
