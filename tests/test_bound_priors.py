"""The prior as `bound` prices it: checkpoint codecs, quantized directories (verified), and their extra bits."""

import json
import math
import shutil
import subprocess

import pytest

from .test_cli_bound import OLD_DEFAULTS, one_line_error, run_cli


def bound(model, data, *extra):
    return [
        "bound",
        "--model",
        str(model),
        "--data",
        str(data),
        "--context",
        "16",
        "--samples",
        "64",
        "--no-progress",
        *OLD_DEFAULTS,
        *extra,
    ]


def test_checkpoint_size_is_the_papers_tar_gz(tiny_gpt2, tiny_corpus, tmp_path, capsys):
    report = tmp_path / "r.json"
    code, out, err = run_cli(bound(tiny_gpt2, tiny_corpus, "--checkpoint-size", "--json", str(report)), capsys)
    assert code == 0, err
    result = json.loads(report.read_text())
    assert result["prior"]["codec"].startswith("gzip") and "gzip" in out
    if shutil.which("tar") and shutil.which("gzip"):
        # Independent measurement: GNU tar -czf over the config and the weights, members by base name.
        archive = tmp_path / "model.tar.gz"
        subprocess.run(
            ["tar", "-czf", str(archive), "-C", str(tiny_gpt2), "config.json", "model.safetensors"],
            check=True,
            env={"PATH": "/usr/bin:/bin", "GZIP": ""},
        )
        assert result["message_bits"] == 8 * archive.stat().st_size
    assert result["extra_bits"] == 0.0


def test_several_codecs_pay_log2_k(tiny_gpt2, tiny_corpus, tmp_path, capsys):
    report = tmp_path / "r.json"
    args = bound(
        tiny_gpt2,
        tiny_corpus,
        "--checkpoint-size",
        "--codecs",
        "gzip,xz,zstd",
        "--extra-bits",
        "1",
        "--json",
        str(report),
    )
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    result = json.loads(report.read_text())
    assert result["extra_bits"] == pytest.approx(1 + math.log2(3))
    assert result["message_bits"] == min(result["prior"]["codecs_tried"].values())


@pytest.fixture(scope="module")
def quantized(tiny_gpt2, tmp_path_factory):
    from tokenbounds.compress.model import quantize_model

    out = tmp_path_factory.mktemp("q") / "q8"
    quantize_model(tiny_gpt2, out, levels=8, configs_tried=4, progress=False)
    return out


def test_quantized_directory_prices_itself(quantized, tiny_corpus, tmp_path, capsys):
    report = tmp_path / "r.json"
    code, _, err = run_cli(bound(quantized, tiny_corpus, "--json", str(report)), capsys)
    assert code == 0, err
    result = json.loads(report.read_text())
    manifest = json.loads((quantized / "quantized.json").read_text())
    assert result["message_bits"] == manifest["message_bits"] == 8 * (quantized / "message.tbqm").stat().st_size
    assert result["extra_bits"] == pytest.approx(2.0)  # log2 of the 4 configurations declared


def test_tampered_quantized_directory_is_refused_even_with_message_bits(quantized, tiny_corpus, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    tampered = tmp_path / "tampered"
    shutil.copytree(quantized, tampered)
    weights = load_file(str(tampered / "model.safetensors"))
    name = next(k for k, v in weights.items() if v.ndim == 2)
    weights[name] = weights[name] * 1.01
    save_file(weights, str(tampered / "model.safetensors"), metadata={"format": "pt"})
    for extra in ([], ["--message-bits", "1000"]):
        code, _, err = run_cli(bound(tampered, tiny_corpus, *extra), capsys)
        one_line_error(code, err, "refusing to bound")


def test_no_prior_for_a_plain_model_is_refused(tiny_gpt2, tiny_corpus, capsys):
    code, _, err = run_cli(bound(tiny_gpt2, tiny_corpus), capsys)
    one_line_error(code, err, "--message-bits")
