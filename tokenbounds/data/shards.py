"""A corpus of token shards, memory-mapped: a directory with meta.json, or one raw nanoGPT-style .bin file.

Shards are raw little-endian token ids (uint16 when the vocabulary fits in 65 536 ids, else uint32). A
directory written by `tokenbounds prepare` holds meta.json:

    {"format": "tokenbounds-shards", "version": 1, "dtype": "uint16", "vocab_size": V, "eot": id,
     "tokenizer": "...", "max_token_id": id,
     "shards": [{"file": "shard_00000.bin", "tokens": n, "max_token_id": id, "sha256": "..."}, ...],
     "sources": [{"path": "...", "sha256": "...", "documents": d}, ...]}

(per-shard "max_token_id" and "sha256" are written by `prepare` since issue 9; older directories lack them.)

Positions are global: shard k covers [offsets[k], offsets[k+1]). The corpus is the concatenation
x_1..x_m of the shards, each shard starting at a document boundary.

Token ids are checked against the model's vocabulary V at two costs. Always: meta.json's max_token_id (or one
chunked scan of a raw file, the only corpus without meta.json) before scoring, and every token the scorer or the
training sampler reads (cheap, every run). A corpus with meta.json is never scanned unless asked: 10^12 tokens are
2 TB, ~50 minutes at 0.7 GB/s. On
request (`Corpus.verify`, one sequential read of every shard): each shard is re-hashed against the sha256 that
`prepare` wrote and scanned for ids >= V, so a shard edited after `prepare` is refused even where no token of it
is sampled. `Corpus.verification` records which of the two a report rests on.
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tokenbounds.errors import UserError

META = "meta.json"
FORMAT = "tokenbounds-shards"
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
SCAN_CHUNK = 1 << 24  # tokens per chunk when scanning a shard for its largest id
SCAN_BAR_DELAY = 1.0  # seconds before the scan shows its progress bar (a small file is read before it would)


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
    max_token_id: int | None = None  # from meta.json, else (a raw file) found by `scan_max_id`
    meta: dict = field(default_factory=dict)
    model_vocab: int | None = None  # the V that `check_vocab` accepted; windows read later are checked against it
    verified: str | None = None  # how `verify` checked every shard, once it has
    scanned: bool = False  # max_token_id was found by reading every token (not taken from meta.json)

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

    def describe_position(self, position: int) -> str:
        """'shard_00003.bin, token 17 (corpus position 1234)': where a global position lies, for error messages."""
        shard, local = self.locate(np.array([position]))
        return f"{self.names[shard[0]]}, token {local[0]} (corpus position {position})"

    def check_window(self, tokens: np.ndarray, shard: int, start: int, vocab_size: int) -> None:
        """Refuse a window read from shards[shard][start:] holding an id >= vocab_size, naming the first one."""
        if len(tokens) and int(tokens.max()) >= vocab_size:
            local = start + int(np.argmax(tokens >= vocab_size))
            position = int(self.offsets[shard]) + local
            raise UserError(
                f"token id {int(tokens[local - start])} at {self.describe_position(position)} is outside the model's "
                f"vocabulary of {vocab_size} ids (was the shard edited after `prepare`?)"
            )

    def token(self, position: int) -> int:
        shard, local = self.locate(np.array([position]))
        return int(self.shards[shard[0]][local[0]])

    def scan_max_id(self, progress: bool = True) -> int:
        """The largest token id in the corpus: meta.json's, else (a raw file) found by reading every shard once."""
        if self.max_token_id is None:
            self.max_token_id = largest_id(self.shards, progress)
            self.scanned = True  # every token was read, so check_vocab below verifies the whole corpus
        return self.max_token_id

    def check_vocab(self, model_vocab: int, progress: bool = True) -> None:
        """Refuse a corpus whose ids the model cannot predict (a raw file is scanned here, with a progress bar)."""
        if self.vocab_size is not None and self.vocab_size > model_vocab:
            raise UserError(
                f"the corpus tokenizer has {self.vocab_size} tokens but the model predicts only {model_vocab}"
            )
        if self.scan_max_id(progress) >= model_vocab:
            raise UserError(f"token id {self.max_token_id} >= the model's vocabulary size {model_vocab}")
        if self.eot >= model_vocab:
            raise UserError(f"eot id {self.eot} >= the model's vocabulary size {model_vocab}")
        self.model_vocab = model_vocab

    def verify(self, model_vocab: int, progress: bool = True) -> dict:
        """Read every shard once: refuse one whose sha256 differs from meta.json's or that holds an id >= V.

        One sequential pass (hash and max id from the same chunks), so it costs what reading the corpus costs:
        about a minute per 100 GB from a warm cache (sha256 at ~1.5 GB/s), far more
        from disk at 10^12 tokens; hence opt-in. Returns `verification(...)` for the report.
        """
        entries = {e.get("file"): e for e in self.meta.get("shards", [])}
        bar = tqdm(total=self.n_tokens, unit="tok", unit_scale=True, desc="verifying", disable=not progress)
        hashed = 0
        try:
            for k, (shard, name) in enumerate(zip(self.shards, self.names, strict=True)):
                expected = entries.get(name, {}).get("sha256")
                digest = hashlib.sha256()
                bad = None  # (local position, id) of the first id >= V
                for start in range(0, len(shard), SCAN_CHUNK):
                    chunk = np.asarray(shard[start : start + SCAN_CHUNK])
                    digest.update(memoryview(chunk).cast("B"))
                    if bad is None and int(chunk.max()) >= model_vocab:
                        local = int(np.argmax(chunk >= model_vocab))
                        bad = (start + local, int(chunk[local]))
                    bar.update(len(chunk))
                changed = expected is not None and digest.hexdigest() != expected
                hashed += expected is not None
                if changed or bad is not None:
                    what = [f"{name} changed after prepare (checksum mismatch)"] if changed else [name]
                    if bad is not None:
                        position = int(self.offsets[k]) + bad[0]
                        what.append(
                            f"token id {bad[1]} at {self.describe_position(position)} is outside the model's "
                            f"vocabulary of {model_vocab} ids"
                        )
                    raise UserError(": ".join(what))
        finally:
            bar.close()
        self.verified = (
            f"every token scanned for ids >= {model_vocab}; {hashed} of {len(self.shards)} shard(s) re-hashed "
            "against meta.json's sha256"
        )
        if hashed < len(self.shards):
            self.verified += " (the others have none: prepared before checksums, or a raw file)"
        return self.verification()

    def content_sha256(self) -> str | None:
        """One digest of the corpus' content: sha256 over meta.json's per-shard (tokens, sha256) in shard order, so
        two reports of the same tokens agree whatever their paths. None when a shard has no recorded sha256 (a raw
        file, or a directory prepared before checksums)."""
        entries = self.meta.get("shards", []) if self.meta else []
        if len(entries) != len(self.shards) or any(not e.get("sha256") for e in entries):
            return None
        return hashlib.sha256("\n".join(f"{e['tokens']} {e['sha256']}" for e in entries).encode()).hexdigest()

    def verification(self, every_token_read: bool = False) -> dict:
        """What the report's token ids rest on, for report["data"]["verification"].

        `every_token_read`: the caller scored every token (exhaustive mode), so the scorer checked them all.
        """
        if self.verified is not None:
            whole, how = True, self.verified
        elif self.scanned and self.model_vocab is not None:
            whole, how = True, f"every token was scanned at open and is < {self.model_vocab} (no meta.json to trust)"
        elif every_token_read:
            whole, how = True, "every token was read and checked against the model's vocabulary (exhaustive mode)"
        else:
            whole = False
            how = (
                "only the tokens read (targets and contexts) were checked against the model's vocabulary; for the "
                "others meta.json's max_token_id was trusted (pass --verify-data to re-hash and scan every shard)"
            )
        return {"read_tokens_checked": True, "whole_corpus_verified": whole, "how": how}


def largest_id(shards: list[np.ndarray], progress: bool = True) -> int:
    """The largest id in the shards: one sequential read in chunks of SCAN_CHUNK tokens, so memory stays flat
    (the chunks are views of the mapped file, never copies), with a progress bar in MB/s after SCAN_BAR_DELAY."""
    best = 0
    total = sum(shard.nbytes for shard in shards)
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1000,
        desc="scanning for the largest token id",
        delay=SCAN_BAR_DELAY,
        disable=not progress,
    ) as bar:
        for shard in shards:
            for start in range(0, len(shard), SCAN_CHUNK):
                chunk = shard[start : start + SCAN_CHUNK]
                best = max(best, int(np.max(chunk)))
                bar.update(chunk.nbytes)
    return best


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
        # `prepare` always records max_token_id; a hand-written meta.json may give only the vocabulary, which bounds
        # every id as well (check_vocab compares it with V). meta.json is never second-guessed by a scan.
        largest = meta.get("max_token_id", None if meta.get("vocab_size") is None else int(meta["vocab_size"]) - 1)
        largest = None if largest is None else int(largest)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{meta_path} is malformed ({err.__class__.__name__}: {err})") from None
    if dtype is not None and dtype != meta_dtype:
        raise UserError(f"--dtype {dtype} contradicts {meta_path}, which says {meta_dtype}")
    if eot is not None and eot != meta_eot:
        raise UserError(f"--eot {eot} contradicts {meta_path}, which says {meta_eot}")
    if largest is None:
        raise UserError(f"{meta_path} gives neither max_token_id nor vocab_size: re-run `tokenbounds prepare`")
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
        max_token_id=largest,
        meta=meta,
    )


def write_meta(directory: Path, meta: dict) -> None:
    (directory / META).write_text(json.dumps({"format": FORMAT, "version": 1, **meta}, indent=2) + "\n")
