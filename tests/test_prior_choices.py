"""Every choice is paid for: --message-bits cannot drop a quantized directory's extra bits or undercut its message."""

import json

import pytest

from .test_cli_bound import one_line_error, run_cli


def bound(model, data, *extra):
    return ["bound", "--model", str(model), "--data", str(data), "--context", "16", "--samples", "64"] + [
        "--method",
        "lotfi",
        "--mode",
        "token",
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def quantized(tiny_gpt2, tmp_path_factory):
    from tokenbounds.compress.model import quantize_model

    out = tmp_path_factory.mktemp("q") / "q8"
    quantize_model(tiny_gpt2, out, levels=8, configs_tried=4, progress=False)
    return out


def test_message_bits_shorter_than_the_verified_message_is_refused(quantized, tiny_corpus, capsys):
    verified = json.loads((quantized / "quantized.json").read_text())["message_bits"]
    for claim in ("1", str(verified - 8)):
        code, _, err = run_cli(bound(quantized, tiny_corpus, "--message-bits", claim), capsys)
        one_line_error(code, err, "shorter than this quantized directory's own verified message")


def test_message_bits_keep_the_manifests_extra_bits(quantized, tiny_corpus, tmp_path, capsys):
    verified = json.loads((quantized / "quantized.json").read_text())["message_bits"]
    report = tmp_path / "r.json"
    args = bound(quantized, tiny_corpus, "--message-bits", str(verified + 800), "--extra-bits", "1")
    code, _, err = run_cli([*args, "--json", str(report)], capsys)
    assert code == 0, err
    result = json.loads(report.read_text())
    assert result["message_bits"] == verified + 800
    assert result["prior"]["verified_bits"] == verified
    assert result["extra_bits"] == pytest.approx(1.0 + 2.0)  # the user's bit + log2 of the 4 configurations declared
    assert result["prior"]["data_choice_bits"] == pytest.approx(3.0)  # both could have seen the subsample
