"""End to end through the command line on a tiny random GPT-2, and every bad input it must refuse."""

import json

import numpy as np
import pytest

from tokenbounds.cli import main

from .conftest import EOT, VOCAB, random_documents, write_shards

REQUIRED_KEYS = {
    "method",
    "mode",
    "delta",
    "n_tokens",
    "samples",
    "vocab_size",
    "message_bits",
    "complexity_nats",
    "context",
    "results",
}


OLD_DEFAULTS = ("--method", "lotfi", "--mode", "token", "--subsample-ucb", "hoeffding")


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def bound_args(model, data, *extra):
    # The paper's configuration, which these tests were written against before eb/block/betting became the default.
    return [
        "bound",
        "--model",
        str(model),
        "--data",
        str(data),
        "--message-bits",
        "2000",
        "--context",
        "32",
        "--no-progress",
        *OLD_DEFAULTS,
        *extra,
    ]


def test_token_and_exhaustive_reports(tiny_gpt2, tiny_corpus, tmp_path, capsys):
    out_token, out_exh = tmp_path / "token.json", tmp_path / "exh.json"
    code, out, err = run_cli(bound_args(tiny_gpt2, tiny_corpus, "--samples", "3000", "--json", str(out_token)), capsys)
    assert code == 0, err
    assert "best bits-per-token bound" in out and "log2 V" in out
    token = json.loads(out_token.read_text())
    assert REQUIRED_KEYS <= token.keys()
    assert token["samples"] == 3000 and token["n_tokens"] == 1550 and token["vocab_size"] == VOCAB
    assert [r["alpha"] for r in token["results"] if r["statistic"] == "bits_per_token"] == [
        1e-4,
        1e-3,
        5e-3,
        0.01,
        0.05,
        0.1,
        0.25,
        0.5,
    ]
    assert [r["k"] for r in token["results"] if r["statistic"] == "top_k_error"] == [
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        10,
        50,
        100,
    ]
    split = token["delta_split"]
    assert split["n_statistics"] == 20
    assert split["martingale_total"] + split["subsampling_total"] == pytest.approx(0.05)

    code, _, err = run_cli(bound_args(tiny_gpt2, tiny_corpus, "--mode", "exhaustive", "--json", str(out_exh)), capsys)
    assert code == 0, err
    exh = json.loads(out_exh.read_text())
    assert exh["samples"] is None
    assert exh["timing"]["scored_targets"] == 1550
    # Exhaustive and token mode agree within the subsampling term (a (1 - delta) event; seeded, so fixed).
    for a, b in zip(token["results"], exh["results"], strict=True):
        assert b["subsampling_term"] == 0.0
        assert abs(a["empirical"] - b["empirical"]) <= a["subsampling_term"]
        assert a["bound"] >= a["empirical"]


def test_same_seed_same_report_and_bfloat16_recorded(tiny_gpt2, tiny_corpus, tmp_path, capsys):
    paths = [tmp_path / f"{i}.json" for i in range(3)]
    for path, dtype in zip(paths, ["float32", "float32", "bfloat16"], strict=True):
        code, _, err = run_cli(
            bound_args(tiny_gpt2, tiny_corpus, "--samples", "200", "--compute-dtype", dtype, "--json", str(path)),
            capsys,
        )
        assert code == 0, err
    first, second, half = (json.loads(p.read_text()) for p in paths)
    assert first["results"] == second["results"]
    assert half["hypothesis"]["compute_dtype"] == "bfloat16"


def test_raw_bin_file_needs_dtype_and_eot(tiny_gpt2, tmp_path, capsys):
    tokens = random_documents(np.random.default_rng(5), 400)
    raw = tmp_path / "train.bin"
    tokens.astype("<u2").tofile(raw)
    code, _, err = run_cli(bound_args(tiny_gpt2, raw, "--samples", "50"), capsys)
    assert code == 2 and "--dtype" in err
    code, out, err = run_cli(
        bound_args(tiny_gpt2, raw, "--samples", "50", "--dtype", "uint16", "--eot", str(EOT)), capsys
    )
    assert code == 0, err


def one_line_error(code, err, *needles):
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--context", "0"], "--context"),
        (["--context", "-3"], "--context"),
        (["--context", "100000"], "maximum"),
        (["--samples", "0"], "--samples"),
        (["--delta", "0"], "--delta"),
        (["--delta", "1.5"], "--delta"),
        (["--alphas", "0.1,1.0"], "alpha"),
        (["--alphas", "0,0.1"], "alpha"),
        (["--extra-bits", "-1"], "--extra-bits"),
    ],
)
def test_bad_numbers(tiny_gpt2, tiny_corpus, capsys, extra, needle):
    code, _, err = run_cli(bound_args(tiny_gpt2, tiny_corpus, *extra), capsys)
    one_line_error(code, err, needle)


@pytest.mark.parametrize("bits", ["0", "-5", "nan", "inf"])
def test_bad_message_bits(tiny_gpt2, tiny_corpus, capsys, bits):
    args = ["bound", "--model", str(tiny_gpt2), "--data", str(tiny_corpus), "--message-bits", bits, "--no-progress"]
    args += OLD_DEFAULTS
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, "--message-bits")


def test_missing_paths(tiny_gpt2, tiny_corpus, tmp_path, capsys):
    code, _, err = run_cli(bound_args(tmp_path / "nope", tiny_corpus), capsys)
    one_line_error(code, err, "does not exist")
    code, _, err = run_cli(bound_args(tiny_gpt2, tmp_path / "nope"), capsys)
    one_line_error(code, err, "does not exist")
    (tmp_path / "empty_dir").mkdir()
    code, _, err = run_cli(bound_args(tmp_path / "empty_dir", tiny_corpus), capsys)
    one_line_error(code, err, "config.json")
    code, _, err = run_cli(bound_args(tiny_gpt2, tmp_path / "empty_dir"), capsys)
    one_line_error(code, err, "meta.json")


def test_bin_not_a_multiple_of_the_dtype(tiny_gpt2, tmp_path, capsys):
    raw = tmp_path / "odd.bin"
    raw.write_bytes(b"\x01\x00\x02\x00\x03")
    code, _, err = run_cli(bound_args(tiny_gpt2, raw, "--dtype", "uint16", "--eot", "1"), capsys)
    one_line_error(code, err, "not a multiple")


def test_token_ids_beyond_the_model_vocabulary(tiny_gpt2, tmp_path, capsys):
    raw = tmp_path / "big.bin"
    np.array([1, 2, VOCAB + 5, EOT], dtype="<u2").tofile(raw)
    code, _, err = run_cli(bound_args(tiny_gpt2, raw, "--dtype", "uint16", "--eot", str(EOT)), capsys)
    one_line_error(code, err, str(VOCAB + 5), "vocabulary")


def test_empty_corpus(tiny_gpt2, tmp_path, capsys):
    raw = tmp_path / "empty.bin"
    raw.write_bytes(b"")
    code, _, err = run_cli(bound_args(tiny_gpt2, raw, "--dtype", "uint16", "--eot", "1"), capsys)
    one_line_error(code, err, "empty")


def test_tokenizer_larger_than_model(tiny_gpt2, tmp_path, capsys):
    data = write_shards(tmp_path / "c", [np.array([1, 2, 3, EOT])], vocab=VOCAB + 100)
    code, _, err = run_cli(bound_args(tiny_gpt2, data), capsys)
    one_line_error(code, err, "tokenizer", str(VOCAB + 100))


def test_corrupt_and_truncated_gguf(tiny_corpus, tmp_path, capsys):
    import gguf

    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    code, _, err = run_cli(bound_args(garbage, tiny_corpus), capsys)
    one_line_error(code, err, "GGUF")

    good = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(good), "llama")
    writer.add_tensor("token_embd.weight", np.ones((64, 16), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[:-1000])
    code, _, err = run_cli(bound_args(truncated, tiny_corpus), capsys)
    one_line_error(code, err, "GGUF")


def test_json_report_is_never_overwritten(tiny_gpt2, tiny_corpus, tmp_path, capsys):
    existing = tmp_path / "report.json"
    existing.write_text("keep me")
    code, _, err = run_cli(bound_args(tiny_gpt2, tiny_corpus, "--json", str(existing)), capsys)
    one_line_error(code, err, "already exists")
    assert existing.read_text() == "keep me"


def test_unknown_or_missing_device(tiny_gpt2, tiny_corpus, capsys):
    code, _, err = run_cli(bound_args(tiny_gpt2, tiny_corpus, "--device", "toaster"), capsys)
    one_line_error(code, err, "device")
    import torch

    if not torch.cuda.is_available():
        code, _, err = run_cli(bound_args(tiny_gpt2, tiny_corpus, "--device", "cuda"), capsys)
        one_line_error(code, err, "CUDA")
