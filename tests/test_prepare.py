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
