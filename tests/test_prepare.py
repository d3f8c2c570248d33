"""`prepare`: documents -> shards with an eot after each, meta.json, and its refusals."""

import json

import numpy as np
import pytest

from tokenbounds.cli import main
from tokenbounds.data.shards import dtype_for_vocab, open_corpus
from tokenbounds.files import file_sha256
from tokenbounds.models.hf import load_tokenizer


def test_prepare_txt_and_jsonl(tiny_tokenizer, tmp_path, capsys):
    txt = tmp_path / "a.txt"
    txt.write_text("the quick brown fox\njumps over the lazy dog\n")
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text(json.dumps({"text": "to be or not"}) + "\n\n" + json.dumps({"text": "to be"}) + "\n")
    out = tmp_path / "shards"
    code = main(
        [
            "prepare",
            str(txt),
            str(jsonl),
            "--tokenizer",
            str(tiny_tokenizer),
            "--out",
            str(out),
            "--shard-tokens",
            "5",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    tok = load_tokenizer(tiny_tokenizer)
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    expected = []
    for text in ["the quick brown fox\njumps over the lazy dog\n", "to be or not", "to be"]:
        expected += tok.encode(text, add_special_tokens=False) + [eot]
    corpus = open_corpus(out)
    got = np.concatenate([np.asarray(s) for s in corpus.shards])
    assert got.tolist() == expected
    meta = json.loads((out / "meta.json").read_text())
    assert meta["eot"] == eot and meta["dtype"] == "uint16" and meta["vocab_size"] == len(tok)
    assert len(meta["shards"]) == 3  # new shard after >= 5 tokens, only at document boundaries
    assert [s["documents"] for s in meta["sources"]] == [1, 2]
    assert meta["sources"][0]["sha256"] == file_sha256(txt)
    assert meta["max_token_id"] == max(expected)
    # per shard, for `Corpus.verify`: its sha256 (of the bytes as written) and its largest id
    for entry, shard in zip(meta["shards"], corpus.shards, strict=True):
        assert entry["sha256"] == file_sha256(out / entry["file"]) and entry["max_token_id"] == int(np.max(shard))
    assert open_corpus(out).verify(len(tok), progress=False)["whole_corpus_verified"]


def test_uint32_for_large_vocabularies():
    assert dtype_for_vocab(50_257) == "uint16" and dtype_for_vocab(65_536) == "uint16"
    assert dtype_for_vocab(65_537) == "uint32" and dtype_for_vocab(128_256) == "uint32"


def test_uint32_raw_file_roundtrip(tmp_path):
    raw = tmp_path / "big.bin"
    np.array([70_000, 5, 128_000], dtype="<u4").tofile(raw)
    corpus = open_corpus(raw, "uint32", eot=5)
    assert corpus.n_tokens == 3 and corpus.token(2) == 128_000


@pytest.mark.parametrize(
    ("content", "name", "needle"),
    [
        ('{"text": "ok"}\n{"body": "x"}\n', "bad.jsonl", "bad.jsonl:2"),
        ("not json\n", "bad2.jsonl", "bad2.jsonl:1"),
        (b"\xff\xfe\x00bad", "latin.txt", "UTF-8"),
        ("", "empty.txt", "empty"),
    ],
)
def test_prepare_bad_inputs(tiny_tokenizer, tmp_path, capsys, content, name, needle):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code = main(
        ["prepare", str(path), "--tokenizer", str(tiny_tokenizer), "--out", str(tmp_path / "o"), "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # a failed run leaves nothing behind


def test_prepare_refuses_to_overwrite_and_missing_inputs(tiny_tokenizer, tmp_path, capsys):
    txt = tmp_path / "a.txt"
    txt.write_text("to be")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    code = main(["prepare", str(txt), "--tokenizer", str(tiny_tokenizer), "--out", str(out), "--no-progress"])
    assert code == 2 and "refusing to overwrite" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "precious"
    code = main(
        [
            "prepare",
            str(tmp_path / "missing.txt"),
            "--tokenizer",
            str(tiny_tokenizer),
            "--out",
            str(tmp_path / "o2"),
            "--no-progress",
        ]
    )
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = main(["prepare", str(txt), "--tokenizer", str(tmp_path / "nope"), "--out", str(tmp_path / "o3")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_byte_tokenizer_prepares_utf8_bytes_and_eot(tmp_path, capsys):
    txt = tmp_path / "a.txt"
    txt.write_text("Ay, thou poor ghost — whiles memory holds a seat\n", encoding="utf-8")
    out = tmp_path / "bytes"
    assert main(["prepare", str(txt), "--tokenizer", "bytes", "--out", str(out), "--no-progress"]) == 0
    corpus = open_corpus(out)
    tokens = np.asarray(corpus.shards[0]).tolist()
    assert tokens == list(txt.read_bytes()) + [256]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["vocab_size"] == 257 and meta["eot"] == 256 and meta["tokenizer"] == "bytes"


def _prepare(files, tokenizer, out, *extra):
    return main(
        ["prepare", *map(str, files), "--tokenizer", str(tokenizer), "--out", str(out), "--no-progress", *extra]
    )


def _tokens(out) -> list[int]:
    return np.concatenate([np.asarray(s) for s in open_corpus(out).shards]).tolist()


WORDS = "the quick brown fox jumps over the lazy dog to be or not".split()


def _documents(n: int) -> list[str]:
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 17)) + "\n" for i in range(n)]


def test_workers_give_byte_identical_shards(tiny_tokenizer, tmp_path, monkeypatch, capsys):
    import tokenbounds.data.prepare as prep

    monkeypatch.setattr(prep, "BATCH_BYTES", 200)  # many small batches, so both workers get some
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in _documents(300)))
    txt = tmp_path / "one.txt"
    txt.write_text("".join(_documents(40)))
    outs = {}
    for workers in (1, 2, 3):
        outs[workers] = tmp_path / f"w{workers}"
        code = _prepare([jsonl, txt], tiny_tokenizer, outs[workers], "--workers", str(workers), "--shard-tokens", "500")
        assert code == 0, capsys.readouterr().err
    tok = load_tokenizer(tiny_tokenizer)
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    expected = []
    for text in [*_documents(300), "".join(_documents(40))]:
        expected += tok.encode(text, add_special_tokens=False) + [eot]
    assert _tokens(outs[1]) == expected
    names = sorted(p.name for p in outs[1].iterdir())
    assert len(names) > 3  # several shards
    for workers in (2, 3):
        assert sorted(p.name for p in outs[workers].iterdir()) == names
        for name in names:
            assert (outs[workers] / name).read_bytes() == (outs[1] / name).read_bytes(), (workers, name)


def test_every_format_reads_the_same_documents(tiny_tokenizer, tmp_path, capsys):
    import gzip
    import lzma

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    docs = _documents(25)
    lines = "".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(docs)).encode()
    tok = load_tokenizer(tiny_tokenizer)
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    per_doc = []
    for text in docs:
        per_doc += tok.encode(text, add_special_tokens=False) + [eot]
    whole = tok.encode("".join(docs), add_special_tokens=False) + [eot]
    half = len(lines) // 2
    cut = lines.index(b"\n", half) + 1
    two_frames = zstandard.ZstdCompressor().compress(lines[:cut]) + zstandard.ZstdCompressor().compress(lines[cut:])
    files = {
        "a.jsonl": lines,
        "a.jsonl.gz": gzip.compress(lines),
        "a.jsonl.xz": lzma.compress(lines),
        "a.jsonl.zst": two_frames,  # a multi-frame file (zstd -T, pzstd) is read through every frame
        "a.txt.zst": zstandard.ZstdCompressor().compress("".join(docs).encode()),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    table = pa.table({"n": list(range(len(docs))), "text": docs})
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=7)
    files["a.parquet"] = b""
    for name in files:
        out = tmp_path / f"out_{name}"
        assert _prepare([tmp_path / name], tiny_tokenizer, out) == 0, (name, capsys.readouterr().err)
        assert _tokens(out) == (whole if name.startswith("a.txt") else per_doc), name
        meta = json.loads((out / "meta.json").read_text())
        assert meta["sources"][0]["documents"] == (1 if name.startswith("a.txt") else len(docs)), name


def test_pretokenized_records(tiny_tokenizer, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tok = load_tokenizer(tiny_tokenizer)
    vocab, eot = len(tok), tok.convert_tokens_to_ids("<|endoftext|>")
    records = [[2, 3, 4], [5], [], [6, 7, 2, eot]]
    jsonl = tmp_path / "ids.jsonl"
    jsonl.write_text("".join(json.dumps({"token_ids": r}) + "\n" for r in records))
    parquet = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"token_ids": pa.array(records, type=pa.list_(pa.int32()))}), parquet)
    flat = [t for r in records for t in r]
    with_eot = [t for r in records if r for t in [*r, eot]]
    for source in (jsonl, parquet):
        out = tmp_path / f"plain_{source.suffix}"
        assert _prepare([source], tiny_tokenizer, out, "--ids-key", "token_ids") == 0, capsys.readouterr().err
        assert _tokens(out) == flat  # concatenated as given: no eot added
        meta = json.loads((out / "meta.json").read_text())
        assert meta["ids_key"] == "token_ids" and meta["append_eot"] is False and meta["n_tokens"] == len(flat)
        out = tmp_path / f"eot_{source.suffix}"
        code = _prepare([source], tiny_tokenizer, out, "--ids-key", "token_ids", "--append-eot", "--workers", "2")
        assert code == 0, capsys.readouterr().err
        assert _tokens(out) == with_eot
    # an id outside the vocabulary is refused, naming the record; nothing is written
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"token_ids": [1, 2]}) + "\n" + json.dumps({"token_ids": [3, vocab]}) + "\n")
    badpq = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"token_ids": [[1], [2], [vocab + 5]]}), badpq)
    for source, needle in ((bad, "bad.jsonl:2"), (badpq, "bad.parquet: row 2")):
        assert _prepare([source], tiny_tokenizer, tmp_path / "o", "--ids-key", "token_ids") == 2
        err = capsys.readouterr().err
        assert needle in err and str(vocab) in err and "Traceback" not in err and err.count("\n") == 1, err
        assert not (tmp_path / "o").exists()
    notids = tmp_path / "notids.jsonl"
    notids.write_text(json.dumps({"token_ids": "hello"}) + "\n")
    assert _prepare([notids], tiny_tokenizer, tmp_path / "o", "--ids-key", "token_ids") == 2
    assert "notids.jsonl:1" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert _prepare([jsonl], tiny_tokenizer, tmp_path / "o", "--append-eot") == 2  # needs --ids-key
    assert "--ids-key" in capsys.readouterr().err


def test_bad_arguments_and_files(tiny_tokenizer, tmp_path, capsys):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"text": t}) + "\n" for t in _documents(2000)))
    assert _prepare([good], tiny_tokenizer, tmp_path / "o", "--workers", "0") == 2
    err = capsys.readouterr().err
    assert "--workers must be >= 1, got 0" in err and not (tmp_path / "o").exists()
    parquet = tmp_path / "cols.parquet"
    pq.write_table(pa.table({"title": ["a"], "content": ["to be"]}), parquet)
    assert _prepare([parquet], tiny_tokenizer, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "no column 'text'" in err and "title, content" in err and not (tmp_path / "o").exists()
    data = good.read_bytes()
    gz, zst = gzip.compress(data), zstandard.ZstdCompressor().compress(data)
    corrupt = {
        "trunc.jsonl.gz": gz[: len(gz) * 3 // 4],
        "trunc.jsonl.zst": zst[: len(zst) * 3 // 4],
        "garbage.jsonl.gz": b"\x1f\x8b" + b"garbage" * 50,
        "garbage.jsonl.zst": b"garbage" * 50,
        "flipped.jsonl.gz": gz[:200] + bytes(b ^ 0xFF for b in gz[200:400]) + gz[400:],
    }
    for name, blob in corrupt.items():
        (tmp_path / name).write_bytes(blob)
        for workers in ("1", "2"):
            out = tmp_path / "o"
            assert _prepare([good, tmp_path / name], tiny_tokenizer, out, "--workers", workers) == 2, name
            err = capsys.readouterr().err
            assert name in err and "corrupt or truncated" in err and err.count("\n") == 1, (name, err)
            assert not out.exists(), name  # nothing written: not even the shards of the good file before it
            out.mkdir()  # an empty directory given as the output stays empty
            assert _prepare([good, tmp_path / name], tiny_tokenizer, out, "--workers", workers) == 2, name
            assert not any(out.iterdir()), name
            out.rmdir()
            capsys.readouterr()


def test_pool_reads_a_bounded_number_of_batches_ahead(tiny_tokenizer):
    """Memory stays flat in the corpus size: the reader is never more than 2 * workers batches ahead of the writer."""
    from tokenbounds.data.prepare import Encoder, _encoding

    encoder = Encoder(load_tokenizer(tiny_tokenizer), "uint16")
    expected = encoder.encode(["to be or not"])[0].tolist()
    pulled = []

    def batches():
        for i in range(40):
            pulled.append(i)
            yield ["to be or not"] * (1 + i % 3), i

    with _encoding(encoder, 2) as encode:
        for k, (result, rest) in enumerate(encode(batches())):
            assert rest == k and len(result) == 1 + k % 3 and result[0].tolist() == expected
            assert len(pulled) <= k + 1 + 4, (k, len(pulled))
    assert len(pulled) == 40


DYING_WORKER = r"""
import multiprocessing, os, signal, sys
from tokenbounds.data.prepare import Encoder, _encoding
from tokenbounds.errors import UserError
from tokenbounds.models.hf import load_tokenizer

def batches():
    for i in range(10_000):
        if i == 6:  # both workers are busy: kill them, as the OOM killer would
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)
        yield ["to be or not to be"] * 50, i

try:
    with _encoding(Encoder(load_tokenizer(sys.argv[1]), "uint16"), 2) as encode:
        for _ in encode(batches()):
            pass
except UserError as err:
    print("refused:", err)
"""


def test_a_dying_worker_is_an_error_not_a_hang(tiny_tokenizer):
    """multiprocessing.Pool replaces a killed worker and waits forever for its batch; the pool must fail instead.
    Run in a subprocess with a timeout, so the hang it guards against fails the test rather than CI."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", DYING_WORKER, str(tiny_tokenizer)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "refused: a tokenizer worker process died" in done.stdout and "--workers 1" in done.stdout
