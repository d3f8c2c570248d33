"""The compression study's configuration and its named sizes (no torch here: `study --help` lists them).

paper: README's figures (the former scripts/bench_bounds.py): a 4 x 128 GPT, a 2,000-step schedule, 1,000 steps
    per dim and param row, 2,000 blocks per bound.
default: the same four sub-studies with 15% of the paper's training steps and 400 blocks per bound: 10.5 minutes
    with one thread on a shared 2-core AVX2 CPU (no native bfloat16), where it must stay under 15.
smallest: a 1 x 32 GPT, 50 steps, 64 blocks: 10 s, for CI; its bounds are valid but far from tight.
"""

from dataclasses import dataclass, replace

SUB_STUDIES = ("time", "dim", "param", "levels")  # the order rows run in


@dataclass(frozen=True)
class CompressionConfig:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    context: int = 128
    batch_size: int = 16
    warmup: int = 50
    lr_subspace: float = 1e-2  # z of any subspace run
    lr_other: float = 3e-3
    bf16: bool = False  # autocast while training; the CLI turns it on where the CPU has native bfloat16
    rank: int = 4  # LoRA rank of the time, param and levels models (and of Kronecker / Monarch's embedding)
    subspace_dim: int = 10_000  # d of the time, param (sublora) and levels models
    time_steps: tuple[int, ...] = (250, 500, 1000, 2000)  # one schedule of the last length, bounded at each
    dim_rank: int = 16  # LoRA rank behind P in the dim study
    dims: tuple[int, ...] = (1_000, 10_000, 100_000)
    steps: int = 1000  # training steps of each dim and param row
    params: tuple[str, ...] = ("lora", "sublora", "kronecker", "monarch")
    kron_factor: int = 4
    monarch_blocks: int = 16
    train_levels: int = 16  # uniform levels coding z in the time, dim and param rows
    levels: tuple[int, ...] = (2, 4, 8, 16)  # levels study: each uniform and k-means, next to float32 z (tar.gz)
    samples: int = 2000  # blocks drawn per bound
    stride: int = 64  # scored block length
    delta: float = 0.05
    seed: int = 0
    studies: tuple[str, ...] = SUB_STUDIES


PAPER = CompressionConfig()
SIZES = {
    "smallest": CompressionConfig(
        n_layer=1,
        n_head=2,
        n_embd=32,
        context=32,
        batch_size=8,
        warmup=5,
        subspace_dim=500,
        time_steps=(25, 50),
        dim_rank=4,
        dims=(100, 1000),
        steps=50,
        monarch_blocks=4,
        levels=(4, 16),
        samples=64,
        stride=16,
    ),
    "default": replace(PAPER, warmup=20, time_steps=(75, 150, 300), steps=150, samples=400),
    "paper": PAPER,
}
