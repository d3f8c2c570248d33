"""The fine-tuning study's configuration and its named sizes (no torch here: `study finetune --help` lists them).

default: the quickstart's model (4 x 128 GPT over bytes, context 128, SubLoRA with LoRA r16 factors behind a seeded
    projection, d = 10,000, z coded at 16 uniform levels) on a 400-step schedule instead of the quickstart's 1,000,
    fine-tuned for 200 steps on the plays' dialogue turns in ChatML, 2,000 blocks per bound. `tokenbounds study
    finetune --out DIR` on a 2-core AMD EPYC (AVX2) shared with other jobs: 17 min 43 s wall, 272 s of CPU on one
    thread (so about 5 minutes with a core to itself).
smallest: a 1 x 32 GPT, 40 + 20 steps, 64 blocks: 7.5 s of CPU, for CI; its bounds are valid but far from tight.

The fine-tuning settings (its steps, a peak learning rate half the base's, dialogues of at most 8 turns) were fixed
before the study was run, not tuned on its bounds.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class FinetuneConfig:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    context: int = 128
    lora_rank: int = 16
    subspace_dim: int = 10_000
    batch_size: int = 16
    base_steps: int = 400
    base_lr: float = 1e-2
    base_warmup: int = 50
    finetune_steps: int = 200
    finetune_lr: float = 5e-3
    finetune_warmup: int = 20
    max_turns: int = 8  # turns per dialogue of the fine-tuning corpus
    levels: int = 16  # uniform levels coding z, and the delta of the fine-tuned z
    samples: int = 2000  # blocks drawn per bound
    stride: int = 64  # scored block length
    delta: float = 0.05
    seed: int = 0
    bf16: bool = False  # autocast while training; the CLI turns it on where the CPU has native bfloat16


SIZES = {
    "smallest": FinetuneConfig(
        n_layer=1,
        n_head=2,
        n_embd=32,
        context=32,
        lora_rank=4,
        subspace_dim=500,
        batch_size=8,
        base_steps=40,
        base_warmup=5,
        finetune_steps=20,
        finetune_warmup=5,
        samples=64,
        stride=16,
    ),
    "default": FinetuneConfig(),
}


@dataclass(frozen=True)
class PairConfig:
    """A base / chat pair of checkpoints (e.g. LLaMA-2 and LLaMA-2-chat) bounded on the same shards."""

    base: str
    chat: str
    data: str  # token shards from `prepare` with the pair's tokenizer: the corpus both are bounded on
    context: int = 1024
    stride: int = 512
    samples: int = 10_000
    delta: float = 0.05
    seed: int = 0
    codecs: tuple[str, ...] = ("gzip",)  # priced by `tar -czf` of each checkpoint's files: the paper's recipe
    compute_dtype: str = "auto"
    device: str = "cpu"
    batch_tokens: int = 8192
