"""The memorization study's configuration and its named sizes (no torch here: `study memorization --help` lists them).

smallest: a 1 x 32 GPT on 16 keyed random and 200 structured records, 150 steps, two levels: 23 s, for CI (its
    float32 recall is 0: the machinery runs, the finding is untestable at this size).
default: a 2 x 64 dense GPT on 128 keyed random and 1,000 structured records (19,536 tokens), 3,000 steps, levels
    256 ... 2 uniform and k-means next to float32: `tokenbounds study memorization --out DIR` ran in 7 min 37 s and
    10 min 40 s (101-105 s of CPU time) with one thread on a 2-core AMD EPYC (AVX2 only) at a load average of 11-13.
paper: the compression study's paper model (4 x 128), 4,096 keyed random and 50,000 structured records, 20,000
    steps, 2,000 blocks per bound (not run on this CPU).
"""

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class MemorizationConfig:
    # the corpus (tokenbounds.data.sequences.SequenceConfig)
    n_values: int = 64
    key_length: int = 2
    continuation: int = 8
    prompt: int = 8
    n_random: int = 128
    n_structured: int = 1000
    n_heldout: int = 500
    max_step: int = 4
    max_period: int = 4
    max_repeat: int = 3
    # the model (dense: every weight is a free parameter, quantized as it is) and its training
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 64
    context: int = 32
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-2
    warmup: int = 50
    bf16: bool = False  # autocast while training; the CLI turns it on where the CPU has native bfloat16
    # post-training quantization: every weight matrix, each with its own codebook; norm gains stay float16
    levels: tuple[int, ...] = (256, 64, 16, 8, 4, 2)
    # the bound: eb + block + betting on the training corpus
    samples: int = 400
    stride: int = 16
    delta: float = 0.05
    seed: int = 0


DEFAULT = MemorizationConfig()
SIZES = {
    "smallest": replace(
        DEFAULT,
        n_values=16,
        n_random=16,
        n_structured=200,
        n_heldout=64,
        n_layer=1,
        n_embd=32,
        context=24,
        steps=150,
        batch_size=16,
        warmup=10,
        levels=(16, 2),
        samples=64,
        stride=8,
    ),
    "default": DEFAULT,
    "paper": replace(
        DEFAULT,
        n_random=4096,
        n_structured=50_000,
        n_heldout=2000,
        n_layer=4,
        n_head=4,
        n_embd=128,
        context=64,
        steps=20_000,
        lr=3e-3,
        samples=2000,
        stride=32,
    ),
}
