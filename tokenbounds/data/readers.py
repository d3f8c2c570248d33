"""Streaming document readers for `prepare`: one per format, each yielding `Item`s in file order.

Formats (looking through a compression suffix .gz, .xz, .bz2, .zst, read as a stream):

- .txt (or anything else): the whole file is one document, read in pieces of about `PIECE_BYTES` bytes cut after a
  newline, so a huge file never sits in memory whole;
- .jsonl: one document per line, in the field `text_key` (or a list of token ids in `ids_key`);
- .parquet: one document per row of the column `text_key` (or `ids_key`), read a batch of rows at a time
  (`ParquetFile.iter_batches`), the format Hugging Face datasets ship.

An `Item` is a piece of text to tokenize, or token ids given as they are (pre-tokenized records), with `ends` set on
the last piece of a document. Memory stays flat in the corpus size: nothing but the current batch is held.
A corrupt or truncated compressed file is refused with one line (`UserError`).
"""

import bz2
import gzip
import io
import json
import lzma
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokenbounds.errors import UserError

PIECE_BYTES = 1 << 22
PARQUET_ROWS = 1024
COMPRESSED = (".gz", ".xz", ".bz2", ".zst")
DECOMPRESS_ERRORS = (EOFError, OSError, lzma.LZMAError, zlib.error)


@dataclass
class Item:
    text: str | None = None  # a piece of text to tokenize, or
    ids: np.ndarray | None = None  # token ids as given (int64)
    ends: bool = True  # the last piece of its document
    nbytes: int = 0  # bytes of input it stands for (UTF-8 text, or the record), for the progress bar
    where: str = ""  # the record, for error messages (pre-tokenized ids)


class _ZstdRaw(io.RawIOBase):
    """A .zst file decompressed frame after frame; input that ends inside a frame is refused (zstandard's own
    stream reader returns a truncated frame's bytes without a word)."""

    def __init__(self, path: Path):
        import zstandard

        self._zstd = zstandard
        self._file = open(path, "rb")
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._in_frame = False
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self._buffer:
            chunk = self._file.read(1 << 20)
            if not chunk:
                if self._in_frame:
                    raise EOFError("the file ends inside a zstd frame (truncated)")
                return
            while chunk:
                try:
                    self._buffer += self._obj.decompress(chunk)
                except self._zstd.ZstdError as err:
                    raise OSError(str(err)) from None
                self._in_frame = not self._obj.eof
                chunk = b""
                if self._obj.eof:
                    chunk = self._obj.unused_data
                    self._obj = self._dctx.decompressobj()
                    self._in_frame = bool(chunk)

    def readinto(self, b) -> int:
        self._fill()
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def open_binary(path: Path):
    """The decompressed bytes of `path`, as a buffered binary stream."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".xz":
        return lzma.open(path, "rb")
    if path.suffix == ".bz2":
        return bz2.open(path, "rb")
    if path.suffix == ".zst":
        return io.BufferedReader(_ZstdRaw(path), 1 << 20)
    return open(path, "rb")


def kind(path: Path) -> str:
    """'.jsonl', '.parquet' or '.txt' (anything else is read as text), looking through a compression suffix."""
    stem = path.with_suffix("") if path.suffix in COMPRESSED else path
    return stem.suffix if stem.suffix in (".jsonl", ".parquet") else ".txt"


def check_source(path: Path, text_key: str, ids_key: str | None) -> None:
    """Refuse an input that cannot hold what we are asked to read, before any slow work."""
    what = kind(path)
    if ids_key is not None and what == ".txt":
        raise UserError(f"{path}: --ids-key reads records of a .jsonl or .parquet file, and this is read as text")
    if what == ".parquet":
        if path.suffix in COMPRESSED:
            raise UserError(f"{path}: a .parquet file is compressed inside; give it uncompressed")
        key = ids_key or text_key
        names = _parquet(path).schema_arrow.names
        if key not in names:
            flag = "--ids-key" if ids_key else "--text-key"
            raise UserError(f"{path} has no column {key!r} ({flag}); its columns: {', '.join(names)}")


def _parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... on a bad file
        raise UserError(f"{path} is not a readable parquet file ({err.__class__.__name__}: {err})") from None


def items(path: Path, text_key: str, ids_key: str | None) -> Iterator[Item]:
    """The file's documents, as items in order; a corrupt compressed file or bad record raises `UserError`."""
    what = kind(path)
    try:
        if what == ".parquet":
            yield from _parquet_items(path, text_key, ids_key)
        elif what == ".jsonl":
            yield from _jsonl_items(path, text_key, ids_key)
        else:
            yield from _text_items(path)
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None
    except DECOMPRESS_ERRORS as err:
        raise UserError(f"{path}: corrupt or truncated {path.suffix} file ({err.__class__.__name__}: {err})") from None


def _text_items(path: Path) -> Iterator[Item]:
    with open_binary(path) as handle:
        previous = None
        while True:
            piece = handle.read(PIECE_BYTES)
            if piece and not piece.endswith(b"\n"):
                piece += handle.readline()
            if previous is not None:
                yield Item(text=previous.decode("utf-8"), ends=not piece, nbytes=len(previous))
            if not piece:
                if previous is None:
                    yield Item(text="", ends=True)
                return
            previous = piece


def pretokenized(values, where: str) -> np.ndarray:
    """A record's list of token ids as int64, refusing anything but a list of integers."""
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise UserError(f"{where}: not a list of integer token ids")
    try:
        return np.asarray(values, dtype=np.int64)
    except OverflowError:
        raise UserError(f"{where}: a token id does not fit in 64 bits") from None


def _jsonl_items(path: Path, text_key: str, ids_key: str | None) -> Iterator[Item]:
    key = ids_key or text_key
    with open_binary(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                value = json.loads(line)[key]
            except (json.JSONDecodeError, KeyError, TypeError, IndexError):
                what = "list of token ids" if ids_key else "string"
                raise UserError(f"{where}: not a JSON object with a {key!r} {what}") from None
            if ids_key:
                yield Item(ids=pretokenized(value, where), nbytes=len(line), where=where)
            elif not isinstance(value, str):
                raise UserError(f"{where}: field {key!r} is not a string")
            else:
                yield Item(text=value, nbytes=len(line))


def _parquet_items(path: Path, text_key: str, ids_key: str | None) -> Iterator[Item]:
    import pyarrow as pa

    key = ids_key or text_key
    check_source(path, text_key, ids_key)
    reader = _parquet(path)
    kind_ = reader.schema_arrow.field(key).type
    if (
        ids_key
        and not (pa.types.is_list(kind_) or pa.types.is_large_list(kind_))
        or (not ids_key and not (pa.types.is_string(kind_) or pa.types.is_large_string(kind_)))
    ):
        what = "a list of integer token ids" if ids_key else "a string"
        raise UserError(f"{path}: column {key!r} holds {kind_}, not {what}")
    if ids_key and not pa.types.is_integer(kind_.value_type):
        raise UserError(f"{path}: column {key!r} holds {kind_}, not a list of integer token ids")
    row = 0
    try:
        for batch in reader.iter_batches(batch_size=PARQUET_ROWS, columns=[key]):
            column = batch.column(0)
            if ids_key:
                offsets = np.asarray(column.offsets)
                flat = np.asarray(column.values.fill_null(-1), dtype=np.int64)
                for i in range(len(column)):
                    ids = flat[offsets[i] : offsets[i + 1]]
                    yield Item(ids=ids, nbytes=ids.nbytes, where=f"{path}: row {row}")
                    row += 1
            else:
                for value in column.to_pylist():
                    row += 1
                    if value is None:
                        raise UserError(f"{path}: row {row - 1} of column {key!r} is null")
                    yield Item(text=value, nbytes=len(value))
    except OSError as err:  # pyarrow's errors on a damaged page (ArrowInvalid is a ValueError)
        raise UserError(f"{path}: unreadable parquet data near row {row} ({err})") from None
    except pa.ArrowException as err:
        raise UserError(f"{path}: unreadable parquet data near row {row} ({err})") from None
