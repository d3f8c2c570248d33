"""Text, jsonl and parquet files -> token shards + meta.json, with any Hugging Face tokenizer, in N processes.

Each document is tokenized without special tokens and followed by the end-of-text token (eot), so the
corpus reads doc_1 eot doc_2 eot ... The readers (`readers.py`) stream documents from .txt (one document per file),
.jsonl (one per line, field `text_key`) and .parquet (one per row, column `text_key`) files, compressed or not
(.gz, .xz, .bz2, .zst). Pre-tokenized records (a list of ids in `ids_key`, as LLM360's Amber ships its corpus in
packed 2,049-token chunks) are concatenated as given, with an eot after each only when `append_eot`, and every id is
checked against the tokenizer's vocabulary.

Batches of documents are tokenized by `workers` processes (each pinned to one tokenizer thread), a bounded number of
batches in flight (memory stays flat in the corpus size), and written in input order, so the shards do not depend
on the number of workers. Shards are written as they fill, each with its sha256 and largest id recorded in
meta.json as it is written (no second read), so `Corpus.verify` can later tell a shard edited since.
"""

import hashlib
import multiprocessing
import os
import shutil
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tokenbounds.data.readers import check_source, items
from tokenbounds.data.shards import DTYPES, dtype_for_vocab, write_meta
from tokenbounds.errors import UserError
from tokenbounds.files import file_sha256, holds_something

BATCH_BYTES = 1 << 20  # text per batch sent to a worker
SINGLE_THREAD = {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


class Encoder:
    """Text -> token ids without special tokens, on one thread. Uses the Rust `tokenizers` backend of a fast
    tokenizer directly (what its `encode` calls); anything else (the byte tokenizer, a slow tokenizer) by `encode`."""

    def __init__(self, tokenizer, dtype: str):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.spec = ("json", backend.to_str()) if backend is not None else ("object", tokenizer)
        self.dtype = DTYPES[dtype]
        self._backend = backend
        self._tokenizer = tokenizer

    def __getstate__(self):
        return {"spec": self.spec, "dtype": self.dtype}

    def __setstate__(self, state):
        self.spec, self.dtype = state["spec"], state["dtype"]
        self._backend = self._tokenizer = None
        if self.spec[0] == "json":
            from tokenizers import Tokenizer

            self._backend = Tokenizer.from_str(self.spec[1])
        else:
            self._tokenizer = self.spec[1]

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        if self._backend is not None:
            fast = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
            return [np.array(e.ids, dtype=self.dtype) for e in fast(texts, add_special_tokens=False)]
        return [np.array(self._tokenizer.encode(t, add_special_tokens=False), dtype=self.dtype) for t in texts]


_ENCODER: Encoder | None = None


def _init_worker(encoder: Encoder) -> None:
    global _ENCODER
    os.environ.update(SINGLE_THREAD)
    _ENCODER = encoder


def _encode_in_worker(texts: list[str]) -> list[np.ndarray]:
    return _ENCODER.encode(texts)


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


def check_inputs(
    paths: list[Path],
    out: Path,
    shard_tokens: int,
    workers: int = 1,
    text_key: str = "text",
    ids_key: str | None = None,
    append_eot: bool = False,
) -> None:
    """Refuse bad arguments before any slow work (loading a tokenizer, reading files)."""
    if not paths:
        raise UserError("no input files given")
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if shard_tokens <= 0:
        raise UserError(f"--shard-tokens must be > 0, got {shard_tokens}")
    if append_eot and ids_key is None:
        raise UserError("--append-eot applies to pre-tokenized records (--ids-key); text always gets its eot")
    for path in paths:
        if not path.is_file():
            raise UserError(f"input {path} does not exist or is not a file")
    for path in paths:
        check_source(path, text_key, ids_key)
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
    workers: int = 1,
    ids_key: str | None = None,
    append_eot: bool = False,
) -> dict:
    """Tokenize `files` into shards under `out` (which must not exist or be empty); return the meta dict.

    The shards and meta.json are the same bytes for any number of `workers`."""
    out = Path(out)
    paths = [Path(f) for f in files]
    check_inputs(paths, out, shard_tokens, workers, text_key, ids_key, append_eot)
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
    bar = tqdm(unit="tok", unit_scale=True, desc="tokenizing", disable=not progress)
    try:
        with _encoding(Encoder(tokenizer, dtype), workers) as encode:
            meta = _write_all(paths, encode, writer, text_key, ids_key, append_eot, eot, vocab_size, bar)
    except BaseException:
        writer.close()
        _remove_partial(out, writer, created)
        raise
    finally:
        bar.close()
    writer.close()
    meta.update(dtype=dtype, vocab_size=vocab_size, eot=int(eot), tokenizer=tokenizer_name)
    if ids_key is not None:
        meta.update(ids_key=ids_key, append_eot=append_eot)
    write_meta(out, meta)
    return meta


class _encoding:
    """A context giving `encode(batches) -> iterator of results in order`: in this process for one worker, else in a
    pool of `workers` processes with at most 2 * workers batches in flight (the executor's `map` would read ahead
    without bound). Every encoder runs on one tokenizer thread. A worker that dies (killed, out of memory, or
    failing as it starts) is an error, not a hang: `multiprocessing.Pool` would replace it and wait forever for its
    batch, where `ProcessPoolExecutor` marks the pool broken."""

    def __init__(self, encoder: Encoder, workers: int):
        self.encoder, self.workers, self.pool, self.saved = encoder, workers, None, {}

    def __enter__(self):
        if self.workers == 1:
            self.saved = {k: os.environ.get(k) for k in SINGLE_THREAD}
            os.environ.update(SINGLE_THREAD)
            return self._local
        context = multiprocessing.get_context("spawn")  # no fork of a process holding torch's threads
        self.pool = ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_init_worker, initargs=(self.encoder,)
        )
        return self._pooled

    def __exit__(self, kind, value, traceback):
        for key, old in self.saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=kind is not None)  # a running batch takes well under 1 s

    def _local(self, batches):
        for texts, rest in batches:
            yield self.encoder.encode(texts), rest

    def _pooled(self, batches):
        pending = deque()
        try:
            for texts, rest in batches:
                pending.append((self.pool.submit(_encode_in_worker, texts), rest))
                if len(pending) >= 2 * self.workers:
                    result, rest = pending.popleft()
                    yield result.result(), rest
            while pending:
                result, rest = pending.popleft()
                yield result.result(), rest
        except BrokenProcessPool:
            raise UserError(
                "a tokenizer worker process died (killed, out of memory, or failing as it started); "
                "nothing was written: run with --workers 1 to see the tokenizer's own error"
            ) from None


def _batches(paths: list[Path], text_key: str, ids_key: str | None) -> Iterator[tuple[list[str], list]]:
    """(texts to tokenize, the batch's items in order) of about BATCH_BYTES of text each; an item's source index
    rides along so documents are counted per source."""
    texts, batch, size = [], [], 0
    for index, path in enumerate(paths):
        for item in items(path, text_key, ids_key):
            batch.append((index, item))
            if item.text is not None:
                texts.append(item.text)
                size += item.nbytes
            if size >= BATCH_BYTES or len(batch) >= 4096:
                yield texts, batch
                texts, batch, size = [], [], 0
    if batch:
        yield texts, batch


def _write_all(paths, encode, writer, text_key, ids_key, append_eot, eot, vocab_size, bar) -> dict:
    documents = [0] * len(paths)
    eot_ids = np.array([eot], dtype=np.int64)
    pending: list[np.ndarray] = []  # pieces of the current document
    start, seen_bytes, tokens = time.perf_counter(), 0, 0
    for encoded, batch in encode(_batches(paths, text_key, ids_key)):
        results = iter(encoded)
        for index, item in batch:
            if item.text is not None:
                ids = next(results)
            else:
                ids = item.ids
                if len(ids) and (int(ids.max()) >= vocab_size or int(ids.min()) < 0):
                    bad = int(ids[(ids >= vocab_size) | (ids < 0)][0])
                    raise UserError(
                        f"{item.where}: token id {bad} is outside the tokenizer's vocabulary of {vocab_size} ids"
                    )
            if len(ids):
                pending.append(ids)
            seen_bytes += item.nbytes
            if not item.ends:
                continue
            if pending:  # an empty document adds nothing, not even its eot
                if ids_key is None or append_eot:
                    pending.append(eot_ids)
                whole = pending[0] if len(pending) == 1 else np.concatenate(pending)
                writer.write_document(whole)
                tokens += len(whole)
                documents[index] += 1
                pending = []
        bar.update(tokens - bar.n)
        elapsed = max(time.perf_counter() - start, 1e-9)
        bar.set_postfix_str(f"{seen_bytes / elapsed / 1e6:.1f} MB/s", refresh=False)
    if not any(e["tokens"] for e in writer.entries):
        raise UserError("the inputs hold no text: the corpus would be empty")
    sources = [{"path": str(p), "sha256": file_sha256(p), "documents": documents[i]} for i, p in enumerate(paths)]
    return {
        "max_token_id": writer.max_id,
        "n_tokens": sum(e["tokens"] for e in writer.entries),
        "shards": writer.entries,
        "sources": sources,
    }


def _remove_partial(out: Path, writer: ShardWriter, created: bool) -> None:
    """A failed run leaves nothing behind: our shard files, and the directory if we made it."""
    for entry in writer.entries:
        (out / entry["file"]).unlink(missing_ok=True)
    if created:
        shutil.rmtree(out, ignore_errors=True)
