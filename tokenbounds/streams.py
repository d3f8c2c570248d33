"""Independent random streams from one user seed: one stream per purpose, so that no two purposes ever coincide.

A bound is valid only if the units it draws are independent of everything that produced the hypothesis. With
`default_rng(seed)` in both `train --seed 0` and `bound --seed 0` the bound would re-draw the training windows. Here
every stream is

    Generator(PCG64(SeedSequence([tag(purpose) as two 32-bit words, seed as 32-bit words...])))

with tag(purpose) the first 8 bytes of sha256(purpose) with the top bit set. The tag always fills exactly the first
two words of the entropy, so two different purposes differ there whatever the seeds are: the bound's stream cannot
equal a training, evaluation or QAT stream for any pair of seeds (SeedSequence hashes its whole entropy, so
different entropy gives unrelated streams).
"""

import hashlib

import numpy as np

from tokenbounds.errors import UserError

TRAIN_WINDOWS = "train/windows"  # the trainer's batches
TRAIN_EVAL = "train/eval-windows"  # the trainer's held-out evaluation windows
TRAIN_TORCH = "train/torch"  # dropout and anything else torch draws while training
QAT_WINDOWS = "qat/windows"  # quantization-aware refinement's batches
BOUND_UNITS = "bound/units"  # the positions or blocks a bound scores
DATA_SEQUENCES = "data/sequences"  # the memorization study's generated corpus (data/sequences.py)
PURPOSES = (TRAIN_WINDOWS, TRAIN_EVAL, TRAIN_TORCH, QAT_WINDOWS, BOUND_UNITS, DATA_SEQUENCES)


def _tag(purpose: str) -> int:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random-stream purpose {purpose!r}; known: {', '.join(PURPOSES)}")
    return int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "little") | (1 << 63)


def check_seed(seed) -> int:
    """`seed` as an int; UserError unless it is an integer >= 0 (a float or bool would silently truncate)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise UserError(f"--seed must be an integer >= 0, got {seed!r}")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    return int(seed)


def seed_sequence(seed: int, purpose: str) -> np.random.SeedSequence:
    """The SeedSequence of `purpose` under the user's `seed` (an integer >= 0)."""
    seed = check_seed(seed)
    tag = _tag(purpose)
    return np.random.SeedSequence([tag & 0xFFFFFFFF, tag >> 32, seed])


def stream(seed: int, purpose: str) -> np.random.Generator:
    """A numpy Generator for `purpose`, independent of every other purpose's stream."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, purpose)))


def torch_seed(seed: int, purpose: str) -> int:
    """A 63-bit integer for torch.manual_seed, drawn from the purpose's own SeedSequence."""
    return int(seed_sequence(seed, purpose).generate_state(1, np.uint64)[0]) >> 1


def describe(seed: int, purpose: str) -> dict:
    """What a report records about a stream: enough to re-create it exactly."""
    ss = seed_sequence(seed, purpose)
    return {"seed": int(seed), "purpose": purpose, "entropy": [int(w) for w in ss.entropy], "generator": "PCG64"}
