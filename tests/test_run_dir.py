"""Runs that survive: `bound --run-dir DIR` killed with SIGKILL at random points, several times, and finished with
`--resume`, reports exactly what an uninterrupted run reports; a torn record is cut off; a full disk is one line and
leaves DIR resumable; a run directory of another run is refused, naming what differs."""

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tokenbounds import run_dir
from tokenbounds.cli import main
from tokenbounds.files import file_sha256
from tokenbounds.run_dir import HEADER, MAGIC, RECORDS, Record, RunDir, read_records
from tokenbounds.stats.unit_sums import UnitSums

from .tiny_run import bound_args, environment, without_timing, write_tiny_corpus, write_tiny_gpt

# One block (16 targets) per batch: many records, so that a kill can land anywhere among them.
MODES = {
    "sampled": ("--samples", "150", "--batch-tokens", "16"),
    "rounds": ("--samples", "400", "--target-slack", "0.3", "--batch-tokens", "16"),  # stops after 2 rounds of draws
    "exhaustive": ("--mode", "exhaustive", "--rule", "block", "--batch-tokens", "16"),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_tiny_gpt(root / "model"), write_tiny_corpus(root / "corpus")


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    """Each mode's report from one uninterrupted run without a run directory, timing removed."""
    root = tmp_path_factory.mktemp("reference")
    reports, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # (module scope: set up before the one_torch_thread fixture of the tests)
    for mode, extra in MODES.items():
        assert main(bound_args(*tiny, *extra, "--json", str(root / f"{mode}.json"))) == 0
        reports[mode] = without_timing(root / f"{mode}.json")[0]
    torch.set_num_threads(threads)
    return reports


def whole_records(log) -> int:
    """Records whose header and payload are all in the log (their checksums are read_records's to check)."""
    data = log.read_bytes() if log.exists() else b""
    count = at = 0
    while at + HEADER.size <= len(data):
        length = HEADER.unpack_from(data, at)[1]
        if at + HEADER.size + length > len(data):
            break
        count, at = count + 1, at + HEADER.size + length
    return count


@pytest.mark.parametrize("mode", ["rounds", "exhaustive"])
def test_killed_runs_resume_to_the_uninterrupted_report(tiny, uninterrupted, tmp_path, mode, capsys):
    rng = np.random.default_rng(sum(map(ord, mode)))
    directory, log = tmp_path / "run", tmp_path / "run" / RECORDS
    args = bound_args(*tiny, *MODES[mode], "--run-dir", str(directory))
    kills, kept = 0, 0
    for attempt in range(3):
        child = subprocess.Popen([sys.executable, "-m", "tokenbounds", *args, *(["--resume"] if attempt else [])],
                                 env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        target = kept + int(rng.integers(2, 30))  # a kill after a random number of new records ...
        while child.poll() is None and whole_records(log) < target:
            time.sleep(0.001)
        time.sleep(float(rng.uniform(0, 0.004)))  # ... and a random instant after it, often mid-record
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            kills += 1
        child.wait()
        assert child.returncode in (0, -signal.SIGKILL), child.stderr.read().decode()[-2000:]
        child.stderr.close()
        records, _ = read_records(log)
        kept = len(records)
    assert kills >= 2, "the runs finished before they could be killed: make them longer"
    out = tmp_path / "resumed.json"
    assert main([*args, "--resume", "--json", str(out)]) == 0, capsys.readouterr().err
    report, timing = without_timing(out)
    assert timing["resumed_batches"] > 0 and timing["run_dir"] == str(directory)
    assert report == uninterrupted[mode]  # byte for byte, timing aside


def sums(rows: int, value: float) -> UnitSums:
    return UnitSums(np.full(rows, 3), np.full((rows, 2), value), np.full((rows, 2), value**2), None,
                    np.full(rows, -value), np.zeros(rows, dtype=np.int64))  # fmt: skip


def test_a_torn_or_damaged_tail_is_cut_off_at_every_byte(tmp_path):
    first = RunDir.open(tmp_path / "run", {"run": 1}, resume=False)
    for index in range(3):  # the last record long, so that a shorter one appended after its cut cannot hide it
        first.append(Record(index, np.arange(1 + 40 * (index == 2)), sums(1 + 40 * (index == 2), index + 0.5), 7))
    first.close()
    log = tmp_path / "run" / RECORDS
    data = log.read_bytes()
    assert data.startswith(MAGIC) and [r.index for r in read_records(log)[0]] == [0, 1, 2]
    last = data.rindex(MAGIC)
    payload = np.random.default_rng(0).integers(last + HEADER.size, len(data), 20)
    for cut in [*range(last, last + HEADER.size + 1), *payload.tolist(), len(data) - 1]:  # a kill in the last write
        log.write_bytes(data[:cut])
        resumed = RunDir.open(tmp_path / "run", {"run": 1}, resume=True)
        assert [r.index for r in resumed.records] == [0, 1]
        resumed.append(Record(5, np.array([5]), sums(1, 9.0), 1))  # appended after the cut, not after the junk
        resumed.close()
        records, size = read_records(log)
        assert [r.index for r in records] == [0, 1, 5] and size == log.stat().st_size
    damaged = bytearray(data)
    damaged[last + HEADER.size + 10] ^= 1  # a flipped bit in the last payload: its checksum fails
    log.write_bytes(bytes(damaged))
    assert [r.index for r in read_records(log)[0]] == [0, 1]
    record = read_records(log)[0][1]
    assert record.input_tokens == 7 and np.array_equal(record.sums.loss, np.full((1, 2), 1.5))


# write_all's calls: 1 the manifest, then one per record; exhaustive logs are rewritten at calls 6, 10, ...
@pytest.mark.parametrize("mode, failing", [("sampled", 9), ("exhaustive", 9), ("exhaustive", 10)])
def test_a_full_disk_is_one_line_and_leaves_the_run_resumable(tiny, uninterrupted, tmp_path, mode, failing, capsys,
                                                              monkeypatch):  # fmt: skip
    monkeypatch.setattr(run_dir, "COMPACT_RECORDS", 5)  # the exhaustive log is rewritten every 4 records
    real, calls = run_dir.write_all, []

    def full_disk(fd, data):
        calls.append(len(data))
        if len(calls) == failing:  # a record half written, then ENOSPC
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(run_dir, "write_all", full_disk)
    directory, out = tmp_path / "run", tmp_path / "resumed.json"
    args = bound_args(*tiny, *MODES[mode], "--run-dir", str(directory))
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "--resume" in err[0], err
    records, size = read_records(directory / RECORDS)
    assert size == (directory / RECORDS).stat().st_size and records  # only whole records are left
    monkeypatch.setattr(run_dir, "write_all", real)
    assert main([*args, "--resume", "--json", str(out)]) == 0, capsys.readouterr().err
    report, timing = without_timing(out)
    assert timing["resumed_batches"] > 0 and report == uninterrupted[mode]


@contextlib.contextmanager
def replaced(path, write):
    """Something else at `path` for a while (`write(path)` makes it), then the original back."""
    keep = path.with_name(path.name + ".kept")
    path.rename(keep)
    write(path)
    try:
        yield
    finally:
        shutil.rmtree(path)
        keep.rename(path)


def test_a_run_directory_of_another_run_is_refused_naming_what_differs(tmp_path, capsys, monkeypatch):
    model, corpus = write_tiny_gpt(tmp_path / "model"), write_tiny_corpus(tmp_path / "corpus")
    directory = tmp_path / "run"
    base = ("--samples", "20", "--run-dir", str(directory))
    assert main(bound_args(model, corpus, *base)) == 0

    def refused(*extra) -> str:
        assert main(bound_args(model, corpus, *base, "--resume", *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "was written by a different run; it differs in " in err[0], err
        return err[0].split("it differs in ")[1]

    assert refused("--seed", "1").startswith("config.seed: 0 -> 1;")
    assert refused("--alphas", "0.1,0.5").startswith("config.alphas: [0.0001, 0.001")
    assert refused("--batch-tokens", "64").startswith("config.batch_tokens: 8192 -> 64")
    with replaced(model, lambda path: write_tiny_gpt(path, seed=1)):  # other weights at the same path
        assert refused().startswith("model_files_sha256.free_parameters.safetensors: ")
    with replaced(corpus, lambda path: write_tiny_corpus(path, seed=4)):  # other tokens at the same path, same sizes
        assert refused().startswith("corpus.modified_ns: ")  # (this meta.json has no sha256 to compare)
    # auto resolving to another dtype (as on a CPU with AMX) is another hypothesis, though every flag is the same
    monkeypatch.setattr("tokenbounds.hypothesis.cpu_has_fast_bf16", lambda: True)
    assert "hypothesis.compute_dtype_choice.resolved: 'float32' -> 'bfloat16'" in refused()
    monkeypatch.undo()
    assert main(bound_args(model, corpus, *base, "--resume")) == 0  # the same run is finished (nothing left)


@pytest.mark.parametrize(
    "setup, extra, needle",
    [
        (None, ("--resume",), "--resume needs --run-dir"),
        ("absent", ("--resume",), "holds no run"),
        ("empty", ("--resume",), "holds no run"),
        ("run", (), "already holds a run: add --resume"),
        ("other", (), "not empty and holds no run"),
        ("file", (), "is a file, not a directory"),
    ],
)
def test_bad_run_directories(tiny, tmp_path, capsys, setup, extra, needle):
    directory = tmp_path / "run"
    if setup in ("empty", "run", "other"):
        directory.mkdir()
    if setup == "run":
        RunDir.open(directory / "inner", {}, resume=False).close()
        directory = directory / "inner"
    if setup == "other":
        (directory / "notes.txt").write_text("mine")
    if setup == "file":
        directory.write_text("mine")
    where = () if setup is None else ("--run-dir", str(directory))
    assert main(bound_args(*tiny, "--samples", "10", *where, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    if setup == "other":
        assert (directory / "notes.txt").read_text() == "mine"  # never touched


def test_hashing_the_priced_files_shows_progress(tiny, tmp_path, capsys):
    """A run directory's start hashes the model's priced files (minutes for a 140 GB checkpoint): in a bar, in bytes,
    unless --no-progress; the digests are the files' own."""
    model, data = tiny
    args = [a for a in bound_args(model, data, "--samples", "20") if a != "--no-progress"]
    assert main([*args, "--run-dir", str(tmp_path / "run"), "--json", str(tmp_path / "r.json")]) == 0
    err = capsys.readouterr().err
    assert "hashing the priced files" in err
    manifest = json.loads((tmp_path / "run" / run_dir.MANIFEST).read_text())
    hashes = manifest["identity"]["model_files_sha256"]
    assert hashes and all(h == file_sha256(model / name) for name, h in hashes.items())
    assert main(bound_args(model, data, "--samples", "20", "--run-dir", str(tmp_path / "quiet"))) == 0
    assert "hashing the priced files" not in capsys.readouterr().err
