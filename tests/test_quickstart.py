"""The quickstart pipeline end to end (a short run; the full default run is timed in README)."""

import json
from dataclasses import asdict

import pytest

from tokenbounds.models.parametrization import spec_bytes
from tokenbounds.quickstart import quickstart_spec
from tokenbounds.quickstart_config import QuickstartConfig
from tokenbounds.train.config import ModelConfig

from .test_cli_bound import one_line_error, run_cli

# The quickstart's model as it shipped (README's figures): its spec must never change by accident.
REFERENCE_SPEC = (
    '{"arch":{"bias":false,"context":128,"dropout":0.0,"n_embd":128,"n_head":4,"n_layer":4,"vocab_size":257},'
    '"format":"tokenbounds-gpt","groups":{"attn":"lora","embed":"lora","mlp":"lora","norm":"dense"},"init_seed":0,'
    '"lora":{"alpha":16.0,"rank":16},"subspace":{"dim":10000,"seed":1,"terms":1},"version":1}'
)


def test_quickstart_model_is_the_reference_and_train_param_sublora():
    spec = quickstart_spec(QuickstartConfig())
    assert spec_bytes(spec).decode() == REFERENCE_SPEC
    # `tokenbounds train --param sublora` at the quickstart's sizes is the very same hypothesis.
    trained = ModelConfig(param="sublora", rank=16).spec(corpus_vocab=257)
    assert trained == spec


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")  # two threads on two shared cores ran this 10x slower
def test_short_quickstart_writes_consistent_reports(tmp_path, capsys):
    out = tmp_path / "qs"
    extra = tmp_path / "copy.json"
    args = [
        "quickstart",
        "--out",
        str(out),
        "--steps",
        "30",
        "--subspace-dim",
        "500",
        "--samples",
        "64",
        "--json",
        str(extra),
        "--no-progress",
    ]
    code, text, err = run_cli(args, capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert json.loads(extra.read_text()) == report
    assert report["method"] == "eb" and report["mode"] == "block" and report["samples"] == 64
    assert report["subsample_ucb"] == "betting"
    assert report["vocab_size"] == 257 and report["n_tokens"] > 4_000_000
    q = report["quickstart"]
    assert q["quantized"]["n_parameters"] == 500 and q["train"]["steps"] == 30
    given = {"out": str(out), "json": str(extra), "steps": 30, "subspace_dim": 500, "samples": 64, "progress": False}
    assert q["config"] == asdict(QuickstartConfig(**given))  # the flags' config is the report's record of the run
    # The bound is priced by the coded message written by the quantize step, nothing else.
    manifest = json.loads((out / "quantized" / "quantized.json").read_text())
    assert report["message_bits"] == manifest["message_bits"] and report["extra_bits"] == 4.0
    assert "best bits-per-token bound" in text and "log2 V" in text
    markdown = (out / "report.md").read_text()
    assert (
        markdown.startswith("# tokenbounds quickstart") and f"{report['best_bits_per_token']['bound']:.4f}" in markdown
    )


def test_quickstart_refuses_a_used_directory_and_bad_numbers(tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    code, _, err = run_cli(["quickstart", "--out", str(used)], capsys)
    one_line_error(code, err, "not empty")
    assert (used / "notes.txt").read_text() == "mine"
    code, _, err = run_cli(["quickstart", "--out", str(tmp_path / "new"), "--steps", "0"], capsys)
    one_line_error(code, err, "--steps")
