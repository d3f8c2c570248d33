"""A corpus of token shards, memory-mapped: a directory with meta.json, or one raw nanoGPT-style .bin file.

Shards are raw little-endian token ids (uint16 when the vocabulary fits in 65 536 ids, else uint32). A
directory written by `tokenbounds prepare` holds meta.json:

    {"format": "tokenbounds-shards", "version": 1, "dtype": "uint16", "vocab_size": V, "eot": id,
     "tokenizer": "...", "max_token_id": id, "shards": [{"file": "shard_00000.bin", "tokens": n}, ...],
     "sources": [{"path": "...", "sha256": "...", "documents": d}, ...]}

Positions are global: shard k covers [offsets[k], offsets[k+1]). The corpus is the concatenation
x_1..x_m of the shards, each shard starting at a document boundary.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tokenbounds.errors import UserError

META = "meta.json"
FORMAT = "tokenbounds-shards"
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
SCAN_CHUNK = 1 << 24  # tokens per chunk when scanning a shard for its largest id


def dtype_for_vocab(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def parse_dtype(name: str) -> np.dtype:
    if name not in DTYPES:
        raise UserError(f"unknown token dtype {name!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def _memmap(path: Path, dtype: np.dtype) -> np.memmap | np.ndarray:
    if not path.is_file():
        raise UserError(f"shard {path} does not exist or is not a file")
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise UserError(
            f"{path} has {size} bytes, not a multiple of {dtype.itemsize} ({dtype.name}): "
            "wrong --dtype or a truncated file"
        )
    if size == 0:
        raise UserError(f"shard {path} is empty")
    return np.memmap(path, dtype=dtype, mode="r")


@dataclass
class Corpus:
    """Memory-mapped shards seen as one token sequence."""

    shards: list[np.ndarray]
    names: list[str]
    eot: int
    vocab_size: int | None = None  # the tokenizer's vocabulary size when known
    max_token_id: int | None = None  # from meta.json, else found by `scan_max_id`
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        lengths = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        if self.n_tokens == 0:
            raise UserError("the corpus is empty")

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def shard_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global positions -> (shard index, position inside that shard)."""
        positions = np.asarray(positions, dtype=np.int64)
        shard = np.searchsorted(self.offsets, positions, side="right") - 1
        return shard, positions - self.offsets[shard]

    def token(self, position: int) -> int:
        shard, local = self.locate(np.array([position]))
        return int(self.shards[shard[0]][local[0]])

    def scan_max_id(self) -> int:
        """The largest token id in the corpus (reads every shard once, in chunks)."""
        if self.max_token_id is None:
            best = 0
            for shard in self.shards:
                for start in range(0, len(shard), SCAN_CHUNK):
                    best = max(best, int(np.max(shard[start : start + SCAN_CHUNK])))
            self.max_token_id = best
        return self.max_token_id

    def check_vocab(self, model_vocab: int) -> None:
        """Refuse a corpus whose ids the model cannot predict."""
        if self.vocab_size is not None and self.vocab_size > model_vocab:
            raise UserError(
                f"the corpus tokenizer has {self.vocab_size} tokens but the model predicts only {model_vocab}"
            )
        if self.scan_max_id() >= model_vocab:
            raise UserError(f"token id {self.max_token_id} >= the model's vocabulary size {model_vocab}")
        if self.eot >= model_vocab:
            raise UserError(f"eot id {self.eot} >= the model's vocabulary size {model_vocab}")


def open_corpus(path: str | Path, dtype: str | None = None, eot: int | None = None) -> Corpus:
    """Open a shard directory (meta.json) or a single raw .bin file (needs dtype and eot)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"data path {path} does not exist")
    if path.is_dir():
        return _open_dir(path, dtype, eot)
    if dtype is None:
        raise UserError(f"{path} is a raw token file: give its --dtype (uint16 or uint32)")
    if eot is None:
        raise UserError(f"{path} is a raw token file: give the end-of-text id with --eot")
    if eot < 0:
        raise UserError(f"--eot must be >= 0, got {eot}")
    return Corpus(shards=[_memmap(path, parse_dtype(dtype))], names=[path.name], eot=eot)


def _open_dir(path: Path, dtype: str | None, eot: int | None) -> Corpus:
    meta_path = path / META
    if not meta_path.is_file():
        raise UserError(f"{path} has no {META}: prepare it with `tokenbounds prepare`, or pass a .bin file")
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise UserError(f"{meta_path} is not a tokenbounds shard index")
        meta_dtype = meta["dtype"]
        entries = meta["shards"]
        meta_eot = int(meta["eot"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{meta_path} is malformed ({err.__class__.__name__}: {err})") from None
    if dtype is not None and dtype != meta_dtype:
        raise UserError(f"--dtype {dtype} contradicts {meta_path}, which says {meta_dtype}")
    if eot is not None and eot != meta_eot:
        raise UserError(f"--eot {eot} contradicts {meta_path}, which says {meta_eot}")
    np_dtype = parse_dtype(meta_dtype)
    if not entries:
        raise UserError(f"{meta_path} lists no shards: the corpus is empty")
    shards, names = [], []
    for entry in entries:
        shard = _memmap(path / entry["file"], np_dtype)
        if len(shard) != int(entry["tokens"]):
            raise UserError(f"{entry['file']} holds {len(shard)} tokens but {META} says {entry['tokens']}")
        shards.append(shard)
        names.append(entry["file"])
    return Corpus(
        shards=shards,
        names=names,
        eot=meta_eot,
        vocab_size=meta.get("vocab_size"),
        max_token_id=meta.get("max_token_id"),
        meta=meta,
    )


def write_meta(directory: Path, meta: dict) -> None:
    (directory / META).write_text(json.dumps({"format": FORMAT, "version": 1, **meta}, indent=2) + "\n")
