"""Text and jsonl files -> token shards + meta.json, with any Hugging Face tokenizer.

Each document is tokenized without special tokens and followed by the end-of-text token (eot), so the
corpus reads doc_1 eot doc_2 eot ... A .txt file is one document; a .jsonl file holds one document per
line, in the field named by `text_key`. Either may be compressed (.xz, .gz, .bz2; read as a stream).
Text is read in pieces of about `PIECE_CHARS` characters cut after a newline, so a huge file never sits in
memory whole (the cut can only change tokens that would straddle that newline, which byte-level BPE
pre-tokenizers split off anyway). Shards are written as they fill, each with its sha256 and largest id recorded
in meta.json as it is written (no second read), so `Corpus.verify` can later tell a shard edited since.
"""

import bz2
import gzip
import hashlib
import json
import lzma
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tokenbounds.data.shards import DTYPES, dtype_for_vocab, write_meta
from tokenbounds.errors import UserError
from tokenbounds.files import file_sha256, holds_something

PIECE_CHARS = 1 << 22


OPENERS = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}


def _open_text(path: Path):
    return OPENERS.get(path.suffix, open)(path, "rt", encoding="utf-8", errors="strict")


def _kind(path: Path) -> str:
    """'.jsonl' or '.txt' (anything else is read as text), looking through a compression suffix."""
    stem = path.with_suffix("") if path.suffix in OPENERS else path
    return stem.suffix


def _text_pieces(path: Path) -> Iterator[str]:
    with _open_text(path) as handle:
        while True:
            piece = handle.read(PIECE_CHARS)
            if not piece:
                return
            if not piece.endswith("\n"):
                piece += handle.readline()
            yield piece


def _documents(path: Path, text_key: str) -> Iterator[Iterator[str]]:
    """Yield each document as an iterator of text pieces."""
    if _kind(path) == ".jsonl":
        with _open_text(path) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    text = record[text_key]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise UserError(f"{path}:{number}: not a JSON object with a {text_key!r} string") from None
                if not isinstance(text, str):
                    raise UserError(f"{path}:{number}: field {text_key!r} is not a string")
                yield iter([text])
    else:
        yield _text_pieces(path)


class ShardWriter:
    """Append token ids; start a new shard file every `shard_tokens` tokens, at a document boundary."""

    def __init__(self, out: Path, dtype: str, shard_tokens: int):
        self.out, self.dtype, self.shard_tokens = out, DTYPES[dtype], shard_tokens
        self.entries: list[dict] = []
        self.handle = None
        self.digest = None  # sha256 of the open shard's bytes so far
        self.count = 0
        self.max_id = 0

    def _open(self):
        name = f"shard_{len(self.entries):05d}.bin"
        self.entries.append({"file": name, "tokens": 0, "max_token_id": 0})
        self.handle = open(self.out / name, "wb")
        self.digest = hashlib.sha256()
        self.count = 0

    def write_document(self, ids: np.ndarray) -> None:
        if self.handle is None or self.count >= self.shard_tokens:
            self.close()
            self._open()
        entry = self.entries[-1]
        if len(ids):
            entry["max_token_id"] = max(entry["max_token_id"], int(ids.max()))
            self.max_id = max(self.max_id, entry["max_token_id"])
        data = ids.astype(self.dtype).tobytes()
        self.handle.write(data)
        self.digest.update(data)
        self.count += len(ids)
        entry["tokens"] = self.count

    def close(self):
        if self.handle is not None:
            self.handle.close()
            self.handle = None
            self.entries[-1]["sha256"] = self.digest.hexdigest()


def check_inputs(paths: list[Path], out: Path, shard_tokens: int) -> None:
    """Refuse bad arguments before any slow work (loading a tokenizer, reading files)."""
    if not paths:
        raise UserError("no input files given")
    for path in paths:
        if not path.is_file():
            raise UserError(f"input {path} does not exist or is not a file")
    if shard_tokens <= 0:
        raise UserError(f"--shard-tokens must be > 0, got {shard_tokens}")
    if holds_something(out):
        raise UserError(f"output {out} exists and is not an empty directory; refusing to overwrite it")


def prepare(
    files: list[str | Path],
    tokenizer,
    out: str | Path,
    tokenizer_name: str,
    text_key: str = "text",
    shard_tokens: int = 100_000_000,
    eot: int | None = None,
    progress: bool = True,
) -> dict:
    """Tokenize `files` into shards under `out` (which must not exist or be empty); return the meta dict."""
    out = Path(out)
    paths = [Path(f) for f in files]
    check_inputs(paths, out, shard_tokens)
    eot = tokenizer.eos_token_id if eot is None else eot
    if eot is None:
        raise UserError("the tokenizer defines no end-of-text token: give one with --eot ID")
    vocab_size = len(tokenizer)
    if not 0 <= eot < vocab_size:
        raise UserError(f"eot id {eot} is outside the tokenizer's vocabulary of {vocab_size}")
    dtype = dtype_for_vocab(vocab_size)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out, dtype, shard_tokens)
    total_bytes = sum(p.stat().st_size for p in paths)
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing", disable=not progress)
    try:
        meta = _write_all(paths, tokenizer, writer, text_key, eot, bar)
    except BaseException:
        writer.close()
        _remove_partial(out, writer, created)
        raise
    finally:
        bar.close()
    writer.close()
    meta.update(dtype=dtype, vocab_size=vocab_size, eot=int(eot), tokenizer=tokenizer_name)
    write_meta(out, meta)
    return meta


def _remove_partial(out: Path, writer: ShardWriter, created: bool) -> None:
    """A failed run leaves nothing behind: our shard files, and the directory if we made it."""
    for entry in writer.entries:
        (out / entry["file"]).unlink(missing_ok=True)
    if created:
        shutil.rmtree(out, ignore_errors=True)


def _write_all(paths: list[Path], tokenizer, writer: ShardWriter, text_key: str, eot: int, bar) -> dict:
    sources = []
    for path in paths:
        documents = 0
        try:
            for pieces in _documents(path, text_key):
                ids = [tokenizer.encode(piece, add_special_tokens=False) for piece in pieces]
                flat = np.fromiter((t for chunk in ids for t in chunk), dtype=np.int64)
                if not len(flat):  # an empty document adds nothing, not even its eot
                    continue
                writer.write_document(np.concatenate([flat, [eot]]))
                documents += 1
        except UnicodeDecodeError:
            raise UserError(f"{path} is not UTF-8 text") from None
        sources.append({"path": str(path), "sha256": file_sha256(path), "documents": documents})
        bar.update(path.stat().st_size)
    if not any(e["tokens"] for e in writer.entries):
        raise UserError("the inputs hold no text: the corpus would be empty")
    return {
        "max_token_id": writer.max_id,
        "n_tokens": sum(e["tokens"] for e in writer.entries),
        "shards": writer.entries,
        "sources": sources,
    }
