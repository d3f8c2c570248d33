"""A run directory (`bound --run-dir DIR`): what a run has finished, kept so that a killed run can be finished.

    DIR/manifest.json   what identifies the run, written once (temp file, fsync, rename)
    DIR/records.log     one record per finished batch, appended as batches finish

A record is MAGIC (8 bytes) | payload length (8, little-endian) | sha256 of the payload (32) | payload, the payload
an .npz of numpy arrays only (read back without pickle): the scoring call it belongs to (`part`: a --target-slack
run scores in several rounds), the batch's index in that call's plan, its units' first target positions (checked
against the plan on resume), its UnitSums arrays and its input tokens. Exhaustive runs record instead the running
totals with the index of the last batch they cover (and rewrite the log as its last record now and then, so that it
stays small).

Why kill -9 at any point leaves a resumable directory: a record reaches the file through os.write, into the page
cache, which outlives the process; a kill in the middle of a record leaves a tail shorter than its header says, and
reading stops at the last whole record whose checksum holds (resuming cuts the tail off before appending). The log is
fsynced every FSYNC_SECONDS and when the run ends, so a machine crash loses at most that much work (a torn record
again being a tail). A failed write (a full disk) cuts the log back to its whole records and is one line.

A record stores float64 sums exactly, so a resumed run adds the same numbers in the same plan order as one that was
never interrupted: its report is bit for bit the same.
"""

import contextlib
import hashlib
import io
import json
import os
import struct
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tokenbounds.data.shards import Corpus
from tokenbounds.errors import UserError
from tokenbounds.files import file_sha256
from tokenbounds.hypothesis import Hypothesis
from tokenbounds.models.registry import priced_files
from tokenbounds.request import BoundRequest
from tokenbounds.stats.unit_sums import UnitSums
from tokenbounds.streams import BOUND_UNITS, describe

MANIFEST, RECORDS = "manifest.json", "records.log"
FORMAT = "tokenbounds run directory 1"
MAGIC = b"TBREC01\n"
HEADER = struct.Struct("<8sQ32s")
FSYNC_SECONDS = 1.0
COMPACT_RECORDS = 256  # exhaustive: rewrite the log as its last record once it holds this many
RUN_DIR_FLAGS = ("run_dir", "resume")  # where the run is kept and whether it continues: not part of what it is
HOW_RUN = ("progress", *RUN_DIR_FLAGS)  # request fields that change how a run goes, never what it reports


def run_identity(req: BoundRequest, hypothesis: Hypothesis, corpus: Corpus) -> dict:
    """What a run directory's records are results of: every setting, the hypothesis (its model's description, the
    resolved compute dtype and why, the prior), the sha256 of the model's priced files, the corpus (its shards' names,
    lengths and modification times, prepare's sha256 of each where meta.json has them, the sha256 of meta.json) and
    the bound's random stream.

    The shards themselves are not re-hashed (2 TB at ~1.5 GB/s is 20 minutes per start): a shard rewritten in place
    with its length and modification time kept is not seen, unless meta.json records its sha256."""
    config = {key: value for key, value in asdict(req).items() if key not in HOW_RUN}
    shards = corpus.meta.get("shards", [])
    hashes = [entry.get("sha256") for entry in shards] if len(shards) == len(corpus.shards) else None
    meta = Path(req.data) / "meta.json"
    modified = [os.stat(s.filename).st_mtime_ns if getattr(s, "filename", None) else None for s in corpus.shards]
    model_path = Path(req.model)
    priced = priced_files(model_path)
    size = sum(file.stat().st_size for file in priced)
    # A 140 GB checkpoint takes minutes to hash at every start: show it
    with tqdm(total=size, unit="B", unit_scale=True, desc="hashing the priced files", disable=not req.progress) as bar:
        files = {
            str(file.relative_to(model_path) if file != model_path else file.name): file_sha256(file, bar=bar)
            for file in priced
        }
    return {
        "config": config,
        "hypothesis": hypothesis.describe(),
        "prior": hypothesis.prior.as_dict(),
        "model_files_sha256": files,
        "corpus": {
            "names": list(corpus.names),
            "lengths": corpus.shard_lengths.tolist(),
            "eot": corpus.eot,
            "modified_ns": modified,
            "sha256": hashes,
            "meta_sha256": file_sha256(meta) if meta.is_file() else None,
        },
        "random_stream": describe(req.seed, BOUND_UNITS),
    }


@dataclass
class Record:
    index: int  # sampled: the batch's index in the plan; exhaustive: the last batch the running totals cover
    targets: np.ndarray | None  # sampled: each unit's first target position, checked against the plan on resume
    sums: UnitSums  # sampled: the batch's units' sums; exhaustive: the running totals (one row)
    input_tokens: int  # sampled: the batch's; exhaustive: the running count
    part: int = 0  # which call of execution.score_plan in the run (one per round of units), in call order


def encode(record: Record) -> bytes:
    """The record's bytes: header (magic, length, sha256) and the .npz payload."""
    arrays = {f.name: getattr(record.sums, f.name) for f in fields(UnitSums)}
    arrays = {name: a for name, a in arrays.items() if a is not None}
    arrays.update(index=np.int64(record.index), input_tokens=np.int64(record.input_tokens), part=np.int64(record.part))
    if record.targets is not None:
        arrays["targets"] = record.targets
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    return HEADER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest()) + payload


def decode(payload: bytes) -> Record:
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    sums = UnitSums(**{f.name: arrays.get(f.name) for f in fields(UnitSums)})
    return Record(int(arrays["index"]), arrays.get("targets"), sums, int(arrays["input_tokens"]), int(arrays["part"]))


def read_records(path: Path) -> tuple[list[Record], int]:
    """The whole records at the start of the log, and the length in bytes of that valid prefix."""
    data = path.read_bytes() if path.exists() else b""
    records, at = [], 0
    while at + HEADER.size <= len(data):
        magic, length, digest = HEADER.unpack_from(data, at)
        payload = data[at + HEADER.size : at + HEADER.size + length]
        if magic != MAGIC or len(payload) != length or hashlib.sha256(payload).digest() != digest:
            break  # a torn or damaged tail: everything from here is scored again
        records.append(decode(payload))
        at += HEADER.size + length
    return records, at


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a full disk raises OSError)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    return {prefix[:-1]: value}


def differences(saved: dict, current: dict) -> list[str]:
    """'field: saved -> current' for every leaf that differs between two identities."""
    a, b = _flatten(saved), _flatten(current)
    return [f"{key}: {a.get(key, '(absent)')!r} -> {b.get(key, '(absent)')!r}" for key in sorted(a.keys() | b.keys())
            if a.get(key) != b.get(key)]  # fmt: skip


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    """Replace `path` by `data` atomically: a temp file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


class RunDir:
    """An open run directory: the records it held when opened, and an append-only log for the new ones."""

    def __init__(self, path: Path, records: list[Record], size: int):
        self.path, self.records = path, records
        self.log = path / RECORDS
        self._fd = os.open(self.log, os.O_WRONLY | os.O_CREAT, 0o644)
        os.ftruncate(self._fd, size)  # a torn tail is cut off before anything is appended after it
        os.lseek(self._fd, size, os.SEEK_SET)
        self._size, self._count, self._synced = size, len(records), time.monotonic()
        self._parts = 0

    def next_part(self) -> int:
        """The number of the next scoring call of this run: calls happen in the same order when it is resumed."""
        self._parts += 1
        return self._parts - 1

    @classmethod
    def open(cls, path: str | Path, identity: dict, resume: bool) -> "RunDir":
        """Start a run in a new or empty DIR, or (resume) continue the run DIR holds, refusing one that differs.

        `identity`: what the run is (JSON-like); a resumed run's must equal the manifest's, field for field.
        """
        path = Path(path)
        identity = json.loads(json.dumps(identity))  # tuples as lists, as read back
        manifest = path / MANIFEST
        if resume:
            if not manifest.is_file():
                raise UserError(f"--resume: {path} holds no run (no {MANIFEST}); leave out --resume to start one")
            saved = json.loads(manifest.read_text())
            if saved.get("format") != FORMAT:
                raise UserError(f"--resume: {manifest} is not a tokenbounds run directory's manifest")
            diff = differences(saved["identity"], identity)
            if diff:
                more = f" (and {len(diff) - 4} more)" if len(diff) > 4 else ""
                raise UserError(
                    f"--resume: {path} was written by a different run; it differs in {'; '.join(diff[:4])}{more}"
                )
            records, size = read_records(path / RECORDS)
            return cls(path, records, size)
        if path.exists() and not path.is_dir():
            raise UserError(f"--run-dir {path} is a file, not a directory")
        if manifest.exists():
            raise UserError(f"--run-dir {path} already holds a run: add --resume to finish it, or give a new directory")
        if path.is_dir() and any(path.iterdir()):
            raise UserError(f"--run-dir {path} is not empty and holds no run: give a new or empty directory")
        if not path.parent.is_dir():
            raise UserError(f"the directory of --run-dir {path} does not exist")
        path.mkdir(exist_ok=True)
        try:
            _write_file(manifest, (json.dumps({"format": FORMAT, "identity": identity}, indent=2) + "\n").encode())
        except OSError as err:
            raise UserError(f"cannot write {manifest}: {err.strerror}") from None
        return cls(path, [], 0)

    def append(self, record: Record) -> None:
        """Add one record to the log; on a failed write the log is cut back to its whole records."""
        data = encode(record)
        try:
            write_all(self._fd, data)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise self._failure(err) from None
        self._size += len(data)
        self._count += 1
        if time.monotonic() - self._synced >= FSYNC_SECONDS:
            self.sync()

    def checkpoint(self, record: Record) -> None:
        """Exhaustive: append the running totals, and rewrite the log as this one record once it has grown long."""
        if self._count + 1 < COMPACT_RECORDS:
            return self.append(record)
        data = encode(record)
        try:
            _write_file(self.log, data)
        except OSError as err:
            raise self._failure(err) from None
        os.close(self._fd)
        self._fd = os.open(self.log, os.O_WRONLY)
        os.lseek(self._fd, 0, os.SEEK_END)
        self._size, self._count, self._synced = len(data), 1, time.monotonic()

    def _failure(self, err: OSError) -> UserError:
        return UserError(
            f"cannot write to run directory {self.path}: {err.strerror or err}; what it holds is whole and "
            "resumable: make room and run the same command with --resume"
        )

    def sync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as err:
            raise self._failure(err) from None
        self._synced = time.monotonic()

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = -1
