"""The paper's scale: planning memory independent of m on a 10^12-token corpus, and no scan of a corpus with meta.json.

The big corpus is eight sparse files of 1.25 * 10^11 uint16 tokens each (`truncate`: 2 TB that take no disk; every
token reads as id 0), with a meta.json as `prepare` writes it except for the per-shard sha256s, which nobody can
compute for 2 TB in a test (a directory prepared before checksums lacks them too: `Corpus.verify` says so, and
without --verify-data they are not read). Memory is the child's peak RssAnon, polled by scripts/bench_memory.py's
`peak_anon_rss`: anonymous pages only, so the shards' mapped pages and the shared libraries do not count.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tokenbounds.data import shards as shards_module
from tokenbounds.data import units as units_module
from tokenbounds.data.shards import open_corpus, write_meta
from tokenbounds.data.units import Unit, document_spans, exhaustive_units
from tokenbounds.errors import UserError

from .conftest import EOT, VOCAB, random_documents, write_shards

ROOT = Path(__file__).resolve().parents[1]
TRILLION = 10**12
SHARDS = 8
GB = 10**9


def bench_memory():
    spec = importlib.util.spec_from_file_location("bench_memory", ROOT / "scripts" / "bench_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def trillion(tmp_path_factory) -> Path:
    """10^12 tokens in eight sparse shards, meta.json as prepare writes it (no sha256s: see the module docstring)."""
    directory = tmp_path_factory.mktemp("trillion")
    per_shard = TRILLION // SHARDS
    entries = []
    for k in range(SHARDS):
        name = f"shard_{k:05d}.bin"
        with open(directory / name, "wb") as handle:
            handle.truncate(2 * per_shard)
        entries.append({"file": name, "tokens": per_shard, "max_token_id": 0})
    meta = {"dtype": "uint16", "vocab_size": VOCAB, "eot": EOT, "tokenizer": "zeros", "max_token_id": 0}
    write_meta(directory, {**meta, "n_tokens": TRILLION, "shards": entries, "sources": []})
    if sum(os.stat(directory / e["file"]).st_blocks for e in entries) > 0:
        pytest.skip("this filesystem does not keep 2 TB sparse files sparse")
    return directory


@pytest.mark.slow
def test_block_bound_on_a_trillion_tokens_in_under_one_gb(trillion, tiny_gpt2, tmp_path):
    out = tmp_path / "report.json"
    command = [sys.executable, "-m", "tokenbounds", "bound", "--model", str(tiny_gpt2), "--data", str(trillion)]
    command += ["--mode", "block", "--samples", "1000", "--context", "16", "--alphas", "0.05", "--topk", "1"]
    command += ["--message-bits", "2000", "--no-progress", "--json", str(out)]
    # A scan of the 2 TB (or any pass over the shards) would not finish in this time.
    run = bench_memory().peak_anon_rss(command, child_env(), timeout=600)
    assert run["returncode"] == 0, run["stderr"][-3000:]
    report = json.loads(out.read_text())
    assert report["n_tokens"] == TRILLION and report["samples"] == 1000 and report["mode"] == "block"
    assert report["data"]["verification"]["whole_corpus_verified"] is False  # nothing but the units was read
    assert 0 < run["peak_anon_bytes"] < GB, f"peak anonymous RSS {run['peak_anon_bytes'] / 1e6:.0f} MB"


def test_a_corpus_with_meta_json_is_never_scanned(trillion, monkeypatch):
    def scan(*args, **kwargs):
        raise AssertionError("a corpus with meta.json was scanned")

    monkeypatch.setattr(shards_module, "largest_id", scan)
    corpus = open_corpus(trillion)
    assert corpus.n_tokens == TRILLION
    corpus.check_vocab(VOCAB)  # meta.json's max_token_id, read from the file, not from the shards
    assert corpus.scan_max_id() == 0 and not corpus.scanned


def test_a_meta_json_without_max_token_id_is_bounded_by_its_vocabulary(tmp_path, monkeypatch):
    directory = write_shards(tmp_path / "old", [np.array([1, 2, EOT, 4])])
    meta = json.loads((directory / "meta.json").read_text())
    del meta["max_token_id"]
    (directory / "meta.json").write_text(json.dumps(meta))
    monkeypatch.setattr(shards_module, "largest_id", lambda *a, **k: pytest.fail("scanned"))
    corpus = open_corpus(directory)
    assert corpus.scan_max_id() == VOCAB - 1
    corpus.check_vocab(VOCAB)
    with pytest.raises(UserError, match="tokenizer has 300 tokens but the model predicts only 299"):
        corpus.check_vocab(VOCAB - 1)
    del meta["vocab_size"]
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="gives neither max_token_id nor vocab_size"):
        open_corpus(directory)


def test_a_raw_file_is_scanned_in_chunks_with_a_progress_bar(tmp_path, monkeypatch, capsys):
    tokens = np.zeros(10_500, dtype="<u2")
    tokens[7_777] = 250
    raw = tmp_path / "raw.bin"
    tokens.tofile(raw)
    monkeypatch.setattr(shards_module, "SCAN_CHUNK", 1_000)
    monkeypatch.setattr(shards_module, "SCAN_BAR_DELAY", 0.0)
    seen = []
    real_max = np.max
    monkeypatch.setattr(shards_module.np, "max", lambda a, *args, **kw: seen.append(len(a)) or real_max(a, *args, **kw))
    corpus = open_corpus(raw, "uint16", eot=EOT)
    corpus.check_vocab(VOCAB, progress=True)
    assert corpus.max_token_id == 250 and corpus.scanned
    assert seen == [1_000] * 10 + [500]  # one pass, one chunk at a time
    err = capsys.readouterr().err
    assert "scanning for the largest token id" in err and "B/s" in err and "21.0k/21.0k" in err  # bytes read
    with pytest.raises(UserError, match="token id 250 >= the model's vocabulary size 200"):
        open_corpus(raw, "uint16", eot=EOT).check_vocab(200, progress=False)


def whole_shard_units(corpus, context):
    """The slow obvious reference: every eot of a shard found at once (what exhaustive_units did before chunking)."""
    for shard_index, shard in enumerate(corpus.shards):
        offset = int(corpus.offsets[shard_index])
        n = len(shard)
        eots = np.flatnonzero(np.asarray(shard) == corpus.eot)
        starts = np.concatenate([[-1], eots[eots < n - 1]])
        ends = np.concatenate([eots[eots < n - 1], [n - 1]])
        for d, end in zip(starts.tolist(), ends.tolist(), strict=True):
            head_end = min(d + context, end)
            head = np.asarray(shard[max(d, 0) : head_end + 1], dtype=np.int64)
            if d < 0:
                head = np.concatenate([[corpus.eot], head])
            yield Unit(head, 1, np.arange(d + 1, head_end + 1, dtype=np.int64) + offset)
            for i in range(head_end + 1, end + 1):
                yield Unit(np.asarray(shard[i - context : i + 1], dtype=np.int64), context, np.array([i + offset]))


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_chunked_eot_scan_gives_the_same_units(tmp_path, monkeypatch, chunk):
    rng = np.random.default_rng(5)
    edge = np.array([EOT, EOT, 5, 6, EOT, 8, EOT])  # eots first, doubled, at a chunk edge and last
    shards = [edge, random_documents(rng, 400, mean_doc=9), np.array([3]), np.array([EOT]), random_documents(rng, 90)]
    corpus = open_corpus(write_shards(tmp_path / "c", shards))
    monkeypatch.setattr(units_module, "EOT_SCAN_CHUNK", chunk)
    for context in (1, 4, 16):
        got, want = list(exhaustive_units(corpus, context)), list(whole_shard_units(corpus, context))
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert a.first == b.first and np.array_equal(a.tokens, b.tokens)
            assert np.array_equal(a.positions, b.positions)


def test_document_spans_read_a_long_shard_in_bounded_memory(tmp_path):
    """One document of 5 * 10^8 tokens (a sparse 1 GB shard without an eot): finding its end reads the whole shard.
    Searched at once, the comparison alone would hold 500 MB; in chunks, a few MB."""
    n = 500_000_000
    shard = tmp_path / "long.bin"
    with open(shard, "wb") as handle:
        handle.truncate(2 * n)
    code = (
        "import numpy as np; from tokenbounds.data.units import document_spans;"
        f"spans = list(document_spans(np.memmap({str(shard)!r}, dtype='<u2', mode='r'), {EOT}));"
        f"assert spans == [(-1, {n - 1})], spans"
    )
    run = bench_memory().peak_anon_rss([sys.executable, "-c", code], child_env(), timeout=300)
    assert run["returncode"] == 0, run["stderr"][-2000:]
    assert run["peak_anon_bytes"] < 150 * 10**6, f"peak anonymous RSS {run['peak_anon_bytes'] / 1e6:.0f} MB"


def test_document_spans(tmp_path):
    shard = np.array([EOT, 1, 2, EOT, EOT, 3, EOT])
    assert list(document_spans(shard, EOT)) == [(-1, 0), (0, 3), (3, 4), (4, 6)]
    assert list(document_spans(np.array([1, 2]), EOT)) == [(-1, 1)]
