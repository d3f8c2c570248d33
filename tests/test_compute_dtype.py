"""--compute-dtype auto: bfloat16 only where it is fast and the backend honours it; recorded in the report."""

import json

import pytest

import tokenbounds.hypothesis as hypothesis
from tokenbounds.hypothesis import resolve_compute_dtype
from tokenbounds.models.registry import backends

from .test_cli_bound import bound_args, run_cli


@pytest.mark.parametrize(
    ("fast", "device", "backend", "expected"),
    [
        (True, "cpu", "hf", "bfloat16"),
        (False, "cpu", "hf", "float32"),
        (False, "cuda", "hf", "bfloat16"),
        (True, "cpu", "tokenbounds-gpt", "bfloat16"),
        (True, "cuda", "quip-sharp", "float32"),  # QuIP# runs in quip-sharp's own dtype only
    ],
)
def test_auto_picks_bfloat16_only_where_it_is_fast(monkeypatch, fast, device, backend, expected):
    monkeypatch.setattr(hypothesis, "cpu_has_fast_bf16", lambda: fast)
    dtype, why = resolve_compute_dtype("auto", device, backends()[backend])
    assert dtype == expected and why


def test_explicit_bfloat16_on_a_slow_cpu_warns(monkeypatch, capsys):
    monkeypatch.setattr(hypothesis, "cpu_has_fast_bf16", lambda: False)
    assert resolve_compute_dtype("bfloat16", "cpu", backends()["hf"])[0] == "bfloat16"
    assert "warning" in capsys.readouterr().err
    monkeypatch.setattr(hypothesis, "cpu_has_fast_bf16", lambda: True)
    resolve_compute_dtype("bfloat16", "cpu", backends()["hf"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("fast", [False, True])
def test_the_choice_is_part_of_the_reported_hypothesis(tiny_gpt2, tiny_corpus, tmp_path, capsys, monkeypatch, fast):
    monkeypatch.setattr(hypothesis, "cpu_has_fast_bf16", lambda: fast)
    out = tmp_path / "r.json"
    args = [*bound_args(tiny_gpt2, tiny_corpus), "--samples", "200", "--json", str(out)]
    code, _, err = run_cli(args, capsys)  # no --compute-dtype: auto
    assert code == 0, err
    report = json.loads(out.read_text())
    resolved = "bfloat16" if fast else "float32"
    assert report["hypothesis"]["compute_dtype"] == resolved  # what the backend really ran
    assert report["hypothesis"]["compute_dtype_choice"]["requested"] == "auto"
    assert report["hypothesis"]["compute_dtype_choice"]["resolved"] == resolved
    assert report["config"]["compute_dtype"] == "auto"
