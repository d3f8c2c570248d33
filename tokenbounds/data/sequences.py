"""A corpus of integer sequences for the memorization study: structured ones, which a rule completes, and random
ones, which only memory completes, written as token shards (`data/shards.py`) that `train` and `bound` read.

Vocabulary (V = n_values + 3 ids; values are taken mod n_values):

    0 .. n_values - 1    value tokens
    KEY = n_values       starts a random record:      KEY k_1 .. k_K  v_1 .. v_n        eot
    PATTERN = KEY + 1    starts a structured record:  PATTERN s_1 .. s_P  s_(P+1) .. s_(P+n)  eot
    eot = KEY + 2

A random record's key (K value tokens) is unique to it and its n values are uniform: recalling them from the key is
pure memorization (n log2 n_values bits per record that no rule supplies). A structured record is one of three
families, its family chosen uniformly, and its P prompt values determine the n that follow:

    progression   s_i = a + i d                    a uniform, d in 1..max_step
    motif         s_i = m_(i mod p)                p in 2..max_period, m uniform in values^p
    sorted run    s_i = a + floor((i + o) / r)     a uniform, r in 2..max_repeat, o in 0..r-1 (non-decreasing,
                                                   each value repeated r times, until it wraps)

P >= 2 max_period and P >= 2 max_repeat (checked): the prompt holds two full periods of a motif (by the Fine-Wilf
theorem its shortest period then continues it) and two full steps of a sorted run.

Held out: a structured record's parameters (family and (a, d), m or (a, r, o)) are held out when the crc32 of their
canonical text is divisible by HOLDOUT_EVERY. The training corpus draws only parameters that are not held out and the
held-out set only ones that are, so no held-out sequence occurs in the training corpus, even in a family small enough
(progressions: n_values * max_step sequences) for training to see every other member; completing one needs the rule.

Everything is drawn from one stream (`streams.DATA_SEQUENCES`) of the seed, so the corpus can never coincide with the
trainer's windows or the bound's units.
"""

import json
import os
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tokenbounds.data.prepare import ShardWriter
from tokenbounds.data.shards import dtype_for_vocab, write_meta
from tokenbounds.errors import UserError
from tokenbounds.streams import DATA_SEQUENCES, describe, stream

FAMILIES = ("progression", "motif", "sorted run")
HOLDOUT_EVERY = 5  # 1 in 5 parameter sets is held out
MAX_DRAWS = 1000  # draws of a record's parameters before its family is declared too small to split
TOKENIZER = "integer-sequences"
EVAL_FILE = "eval.npz"  # beside the shards: the recall table and the held-out structured records


@dataclass(frozen=True, kw_only=True)
class SequenceConfig:
    n_values: int
    key_length: int  # K
    continuation: int  # n: values to complete, for both kinds
    prompt: int  # P: structured values given before the continuation
    n_random: int  # keyed random records (each once in the corpus)
    n_structured: int  # structured training records
    n_heldout: int  # held-out structured records (for accuracy only)
    max_step: int
    max_period: int
    max_repeat: int
    seed: int

    def __post_init__(self):
        if self.n_random < 1 or self.n_structured < 1:
            raise UserError(
                f"a memorization study needs random and structured sequences: got {self.n_random} random and "
                f"{self.n_structured} structured"
            )
        if self.n_values < 2 or self.key_length < 1 or self.continuation < 1 or self.n_heldout < 1:
            raise UserError("n_values >= 2, key_length >= 1, continuation >= 1 and n_heldout >= 1 are needed")
        if self.n_random > self.n_values**self.key_length:
            raise UserError(
                f"{self.n_random} random records need unique keys, but {self.key_length} values of {self.n_values} "
                f"give only {self.n_values**self.key_length}"
            )
        if min(self.max_step, self.max_period - 1, self.max_repeat - 1) < 1:
            raise UserError("max_step >= 1, max_period >= 2 and max_repeat >= 2 are needed")
        if self.prompt < 2 * max(self.max_period, self.max_repeat):
            raise UserError(
                f"the prompt ({self.prompt}) must hold two periods of the longest motif and sorted-run step "
                f"({2 * max(self.max_period, self.max_repeat)} values)"
            )

    @property
    def key(self) -> int:
        return self.n_values

    @property
    def pattern(self) -> int:
        return self.n_values + 1

    @property
    def eot(self) -> int:
        return self.n_values + 2

    @property
    def vocab_size(self) -> int:
        return self.n_values + 3

    @property
    def longest_record(self) -> int:
        """Tokens of the longest record, its eot included."""
        return 2 + max(self.key_length, self.prompt) + self.continuation


def held_out(family: str, params: tuple[int, ...]) -> bool:
    return zlib.crc32(f"{family}:{','.join(map(str, params))}".encode()) % HOLDOUT_EVERY == 0


def structured_values(family: str, params: tuple[int, ...], length: int, n_values: int) -> np.ndarray:
    i = np.arange(length)
    if family == "progression":
        a, d = params
        values = a + i * d
    elif family == "motif":
        values = np.asarray(params)[i % len(params)]
    else:
        a, r, o = params
        values = a + (i + o) // r
    return (values % n_values).astype(np.int64)


def _draw_params(cfg: SequenceConfig, family: str, rng: np.random.Generator) -> tuple[int, ...]:
    if family == "progression":
        return int(rng.integers(cfg.n_values)), int(rng.integers(1, cfg.max_step + 1))
    if family == "motif":
        period = int(rng.integers(2, cfg.max_period + 1))
        return tuple(int(v) for v in rng.integers(cfg.n_values, size=period))
    repeat = int(rng.integers(2, cfg.max_repeat + 1))
    return int(rng.integers(cfg.n_values)), repeat, int(rng.integers(repeat))


def _structured(cfg: SequenceConfig, n: int, want_held_out: bool, rng: np.random.Generator) -> np.ndarray:
    """(n, 1 + P + n_cont) structured records without eot, their parameters on the requested side of the split."""
    rows = np.empty((n, 1 + cfg.prompt + cfg.continuation), dtype=np.int64)
    rows[:, 0] = cfg.pattern
    for k in range(n):
        family = FAMILIES[int(rng.integers(len(FAMILIES)))]
        for _ in range(MAX_DRAWS):
            params = _draw_params(cfg, family, rng)
            if held_out(family, params) == want_held_out:
                break
        else:
            side = "held-out" if want_held_out else "training"
            raise UserError(f"the {family} family has no {side} sequences at {cfg.n_values} values: use more values")
        rows[k, 1:] = structured_values(family, params, cfg.prompt + cfg.continuation, cfg.n_values)
    return rows


def _random(cfg: SequenceConfig, rng: np.random.Generator) -> np.ndarray:
    """(n_random, 1 + K + n_cont) keyed random records without eot; keys distinct (drawn without replacement)."""
    codes = rng.choice(cfg.n_values**cfg.key_length, size=cfg.n_random, replace=False)
    digits = (codes[:, None] // cfg.n_values ** np.arange(cfg.key_length - 1, -1, -1)) % cfg.n_values
    rows = np.empty((cfg.n_random, 1 + cfg.key_length + cfg.continuation), dtype=np.int64)
    rows[:, 0] = cfg.key
    rows[:, 1 : 1 + cfg.key_length] = digits
    rows[:, 1 + cfg.key_length :] = rng.integers(cfg.n_values, size=(cfg.n_random, cfg.continuation))
    return rows


@dataclass(frozen=True)
class EvalSet:
    """Records as token rows (marker, prompt, continuation; no eot) and where their continuation starts."""

    recall: np.ndarray  # the training corpus' random records: prompt = KEY + key
    pattern: np.ndarray  # held-out structured records: prompt = PATTERN + P values
    recall_prompt: int
    pattern_prompt: int


def generate(cfg: SequenceConfig) -> tuple[list[np.ndarray], EvalSet]:
    """The training records in corpus order (each ending in eot) and the evaluation sets."""
    rng = stream(cfg.seed, DATA_SEQUENCES)
    keyed = _random(cfg, rng)
    train = _structured(cfg, cfg.n_structured, False, rng)
    heldout = _structured(cfg, cfg.n_heldout, True, rng)
    records = [*keyed, *train]
    order = rng.permutation(len(records))
    eot = np.array([cfg.eot], dtype=np.int64)
    corpus = [np.concatenate([records[i], eot]) for i in order]
    return corpus, EvalSet(keyed, heldout, 1 + cfg.key_length, 1 + cfg.prompt)


def write_sequences(cfg: SequenceConfig, out: str | Path, shard_tokens: int = 100_000_000) -> dict:
    """Write the corpus as shards + meta.json into the new directory `out`, and EVAL_FILE beside them; return meta.

    Written under a temporary name and renamed when complete, so an interrupted write leaves nothing to trust."""
    out = Path(out)
    if out.exists():
        raise UserError(f"{out} exists: refusing to overwrite it")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    records, evals = generate(cfg)
    dtype = dtype_for_vocab(cfg.vocab_size)
    writer = ShardWriter(partial, dtype, shard_tokens)
    for record in records:
        writer.write_document(record)
    writer.close()
    np.savez(partial / EVAL_FILE, recall=evals.recall, pattern=evals.pattern,
             prompts=np.array([evals.recall_prompt, evals.pattern_prompt]))  # fmt: skip
    source = {"generator": "tokenbounds.data.sequences", "config": asdict(cfg),
              "stream": describe(cfg.seed, DATA_SEQUENCES), "documents": len(records)}  # fmt: skip
    meta = {
        "max_token_id": writer.max_id,
        "n_tokens": sum(e["tokens"] for e in writer.entries),
        "shards": writer.entries,
        "sources": [source],
        "dtype": dtype,
        "vocab_size": cfg.vocab_size,
        "eot": cfg.eot,
        "tokenizer": TOKENIZER,
    }
    write_meta(partial, meta)
    os.replace(partial, out)
    return json.loads((out / "meta.json").read_text())


def read_eval(data: str | Path) -> EvalSet:
    with np.load(Path(data) / EVAL_FILE) as f:
        recall_prompt, pattern_prompt = (int(v) for v in f["prompts"])
        return EvalSet(f["recall"], f["pattern"], recall_prompt, pattern_prompt)
