"""`tokenbounds report`: real bound reports (a tiny random GPT-2) and a real study (the smallest compression study)
merged into one table, JSON and plots; runs of other corpora or configurations refused unless named; bad input one
line, nothing written."""

import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tokenbounds.cli import main
from tokenbounds.report.merge import FIELDS, bound_cell, failure_text

from .conftest import random_documents, write_shards

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def reports(tmp_path_factory, tiny_gpt2, tiny_corpus) -> dict[str, Path]:
    """Bound reports of one model: a, b (another prior), delta (another delta), other (another corpus), ckpt (priced
    by its checkpoint, so its bits per parameter are known)."""
    import torch

    from tokenbounds.pipeline import BoundRequest, compute_bound
    from tokenbounds.report.io import write_json

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reports")
    other = write_shards(out / "other", [random_documents(np.random.default_rng(2), 900)])
    twins = [random_documents(np.random.default_rng(seed), 900) for seed in (3, 3, 4)]  # 3 and 3: the same tokens
    hashed = [hashed_shards(out / f"hashed{i}", tokens) for i, tokens in enumerate(twins)]
    base = dict(model=str(tiny_gpt2), data=str(tiny_corpus), message_bits=2000.0, context=32, samples=100)
    variants = {
        "a": {},
        "b": {"message_bits": 40_000.0},
        "delta": {"delta": 0.1},
        "other": {"data": str(other)},
        "ckpt": {"message_bits": None, "checkpoint_size": True},
        "hashed": {"data": str(hashed[0])},
        "same_tokens": {"data": str(hashed[1])},
        "same_size": {"data": str(hashed[2])},
    }
    paths = {}
    for name, change in variants.items():
        paths[name] = out / f"{name}.json"
        write_json(paths[name], compute_bound(BoundRequest(**{**base, **change, "progress": False})))
    torch.set_num_threads(threads)
    return paths


def hashed_shards(directory: Path, tokens: np.ndarray) -> Path:
    """One shard with its sha256 in meta.json, as `prepare` writes it."""
    write_shards(directory, [tokens])
    meta = json.loads((directory / "meta.json").read_text())
    meta["shards"][0]["sha256"] = hashlib.sha256((directory / "shard_00000.bin").read_bytes()).hexdigest()
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """The smallest compression study's time and levels sub-studies: 7 rows in two groups."""
    import torch

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("study") / "run"
    assert main(["study", "compression", "--size", "smallest", "--studies", "time,levels", "--out", str(out)]) == 0
    torch.set_num_threads(threads)  # the CLI set its --threads for this process
    return out


def report(args: list, out: Path, capsys) -> dict:
    code = main(["report", *map(str, args), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"wrote {out / 'report.md'}" in captured.out
    return json.loads((out / "report.json").read_text())


def refused(args: list, out: Path, capsys, *needles: str) -> str:
    code = main(["report", *map(str, args), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists(), "a refused report wrote something"
    return err


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def test_reports_of_one_corpus_and_configuration_merge(reports, tmp_path, capsys):
    out = tmp_path / "merged"
    merged = report([reports["a"], reports["b"], reports["ckpt"]], out, capsys)
    rows = merged["rows"]
    assert [r["run"] for r in rows] == [str(reports[k]) for k in ("a", "b", "ckpt")]
    for row, name in zip(rows, ("a", "b", "ckpt"), strict=True):
        best = load(reports[name])["best_bits_per_token"]
        assert (row["bound"], row["empirical"], row["alpha"]) == (best["bound"], best["empirical"], best["alpha"])
        assert [c["bound"] for c in row["curve"]] == [
            r["bound"] for r in load(reports[name])["results"] if r["statistic"] == "bits_per_token"
        ]
    assert rows[0]["message_bits"] == 2000.0 and rows[1]["message_bits"] == 40_000.0
    assert rows[0]["bits_per_parameter"] is None  # --message-bits: the parameters it describes are unknown
    prior = load(reports["ckpt"])["prior"]
    assert rows[2]["bits_per_parameter"] == pytest.approx(prior["message_bits"] / prior["n_parameters"], rel=1e-12)
    assert rows[2]["bits_per_parameter"] == pytest.approx(prior["bits_per_parameter"], rel=1e-12)
    assert merged["varying"] == [] and merged["shared"]["data"] == {
        "n_tokens": 1550,
        "shards": 3,
        "eot": 299,
        "content_sha256": None,
    }
    assert merged["shared"]["delta"] == 0.05 and merged["failure_together"] == pytest.approx(0.15)

    text = (out / "report.md").read_text()
    assert "hold together with probability >= 1 - 0.15;" in text
    assert "1,550 tokens in 3 shard(s), eot 299" in text and "lambdas 42 values from 0.0001 to 0.9" in text
    for row in rows:
        assert f"| {bound_cell(row['bound'])} |" in text
    assert merged["plots"] == [f"plots/alpha-{i}-{n}.png" for i, n in enumerate(("a", "b", "ckpt"), 1)] + [
        "plots/bits_per_parameter.png"
    ]
    for plot in merged["plots"]:
        assert (out / plot).read_bytes().startswith(PNG) and f"]({plot})" in text


def test_a_directory_of_reports_is_read_in_name_order(reports, tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("b", "a"):
        shutil.copyfile(reports[name], runs / f"{name}.json")
    (runs / "unrelated-dir").mkdir()  # neither a report nor a study: not read
    merged = report([runs], tmp_path / "merged", capsys)
    assert [r["run"] for r in merged["rows"]] == [str(runs / "a.json"), str(runs / "b.json")]


def test_reports_of_another_corpus_are_refused_unless_named(reports, tmp_path, capsys):
    refused(
        [reports["a"], reports["other"]],
        tmp_path / "merged",
        capsys,
        "differ in data (1,550 tokens in 3 shard(s), eot 299 vs 900 tokens in 1 shard(s), eot 299)",
        "--differ data ",
    )
    merged = report([reports["a"], reports["other"], "--differ", "data"], tmp_path / "merged", capsys)
    assert merged["varying"] == ["data"] and merged["differ"] == ["data"]
    assert [r["fields"]["data"]["n_tokens"] for r in merged["rows"]] == [1550, 900]
    assert "| run | row | data | hypothesis |" in (tmp_path / "merged" / "report.md").read_text()


def test_corpora_are_told_apart_by_their_content_not_their_size_or_path(reports, tmp_path, capsys):
    refused([reports["hashed"], reports["same_size"]], tmp_path / "merged", capsys, "differ in data (900 tokens in 1")
    merged = report([reports["hashed"], reports["same_tokens"]], tmp_path / "same", capsys)
    assert merged["varying"] == [] and len(merged["rows"]) == 2


def test_reports_of_another_configuration_are_refused_unless_named(reports, tmp_path, capsys):
    refused([reports["a"], reports["delta"]], tmp_path / "merged", capsys, "differ in delta (0.05 vs 0.1)")
    merged = report([reports["a"], reports["delta"], "--differ", "delta"], tmp_path / "merged", capsys)
    assert merged["varying"] == ["delta"] and merged["failure_together"] == pytest.approx(0.15)
    text = (tmp_path / "merged" / "report.md").read_text()
    assert "| run | row | delta | hypothesis |" in text and "1 - 0.15;" in text


def test_every_differing_field_is_named_in_one_line(reports, study, tmp_path, capsys):
    refused(
        [reports["a"], study],
        tmp_path / "merged",
        capsys,
        "differ in data (1,550 tokens in 3 shard(s), eot 299 vs 5,057,281 tokens in 1 shard(s), eot 256, "
        "sha256 f8446743b0c5), "
        "stride (32 vs 16), samples (100 vs 64)",
        "--differ data,stride,samples if",
    )
    merged = report([reports["a"], study, "--differ", "data,stride,samples"], tmp_path / "merged", capsys)
    assert len(merged["rows"]) == 8 and merged["varying"] == ["data", "stride", "samples"]
    assert merged["failure_together"] == pytest.approx(0.10)


def test_a_study_directory(study, tmp_path, capsys):
    out = tmp_path / "merged"
    merged = report([study], out, capsys)
    summary = load(study / "study.json")
    assert [(r["key"], r["group"], r["label"]) for r in merged["rows"]] == [
        (r["key"], r["group"], r["label"]) for r in summary["results"]
    ]
    for row, record in zip(merged["rows"], summary["results"], strict=True):
        assert row["bound"] == record["bound"]["bound"] and row["empirical"] == record["bound"]["empirical"]
        assert row["study"] == "compression" and row["params"] == record["params"]
        assert row["bits_per_parameter"] == pytest.approx(record["facts"]["bits_per_parameter"], rel=1e-12)
        assert row["failure"] == pytest.approx(0.05 / 7)  # each row paid log2 7 bits
    assert merged["failure_together"] == pytest.approx(0.05) and merged["runs"][0]["kind"] == "study"
    assert merged["varying"] == []  # the study's rows share the corpus and the bound configuration
    for name in ("alpha-1-run", "bits_per_parameter", "study-1-run-time", "study-1-run-levels"):
        assert (out / "plots" / f"{name}.png").read_bytes().startswith(PNG)
    assert "| time: step=50 |" in (out / "report.md").read_text()
    again = report([study / "study.json"], tmp_path / "again", capsys)  # the study.json file names the study too
    assert again["rows"] == merged["rows"]


def test_a_study_row_given_alone_is_worth_its_whole_delta(study, tmp_path, capsys):
    """Picked from its study, maybe by its bound: only the study's union (delta) covers it, not delta / 7."""
    merged = report([study / "rows" / "time-step50.json"], tmp_path / "merged", capsys)
    (row,) = merged["rows"]
    assert row["group"] == "time" and row["failure"] == 0.05 and merged["failure_together"] == 0.05
    assert row["bound"] == load(study / "rows" / "time-step50.json")["bound"]["bound"]


def study_copy(study: Path, tmp_path: Path) -> Path:
    """The study's records only (not its data and models), to edit."""
    copy = tmp_path / "study"
    shutil.copytree(study / "rows", copy / "rows")
    for name in ("study.json", "config.json"):
        shutil.copyfile(study / name, copy / name)
    return copy


def test_bad_studies_are_refused(study, tmp_path, capsys):
    copy, out = study_copy(study, tmp_path), tmp_path / "merged"
    step25, step50 = (copy / "rows" / f"time-step{n}.json" for n in (25, 50))

    summary = load(copy / "study.json")
    summary["results"][1]["bound"]["bound"] -= 0.5
    (copy / "study.json").write_text(json.dumps(summary))
    refused([copy], out, capsys, "disagree on the row's bound")
    shutil.copyfile(study / "study.json", copy / "study.json")

    unpaid = load(step50)
    unpaid["report"]["delta_split"]["data_choice_bits"] = 0.0  # as if its subsampling delta had not been divided
    step50.write_text(json.dumps(unpaid))
    refused([copy], out, capsys, "did not pay the 2.80735 bits")
    refused([step50], out, capsys, "did not pay the 2.80735 bits")
    shutil.copyfile(study / "rows" / step50.name, step50)

    edited = load(step25)
    edited["report"]["best_bits_per_token"]["bound"] -= 0.5
    edited["bound"]["bound"] -= 0.5
    step25.write_text(json.dumps(edited))
    refused([step25], out, capsys, "not the least bits-per-token bound")

    step25.unlink()
    refused([copy], out, capsys, "missing rows/time-step25.json")
    (copy / "study.json").unlink()
    refused([copy], out, capsys, "unfinished study")
    refused([tmp_path], out, capsys, f"{copy} holds an unfinished study")  # in a directory of runs: not left out


def test_bad_reports_are_refused(reports, tmp_path, capsys):
    out = tmp_path / "merged"
    refused([tmp_path / "nope.json"], out, capsys, "does not exist")
    refused([reports["a"], reports["a"]], out, capsys, "is given twice")
    size = tmp_path / "size.json"
    size.write_text(json.dumps({"files": ["x"], "codecs": {"gzip": 8}}))
    refused([size], out, capsys, "is not a bound report")
    text = reports["a"].read_text()
    nan = tmp_path / "nan.json"
    nan.write_text(text.replace('"empirical": ', '"empirical": NaN, "was": ', 1))
    refused([nan], out, capsys, "is not a readable JSON file", "NaN")
    nan.write_text(text.replace('"empirical": ', '"empirical": 1e999, "was": ', 1))
    refused([nan], out, capsys, "is not a readable JSON file", "1e999 overflows")
    incomplete = load(reports["a"])
    del incomplete["data"]
    (tmp_path / "incomplete.json").write_text(json.dumps(incomplete))
    refused([tmp_path / "incomplete.json"], out, capsys, "is not a complete bound report", "'data'")
    edited = load(reports["a"])
    edited["best_bits_per_token"]["bound"] -= 0.01
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    refused([tmp_path / "edited.json"], out, capsys, "not the least bits-per-token bound")
    (tmp_path / "empty").mkdir()
    refused([tmp_path / "empty"], out, capsys, "holds no bound report")


def test_an_existing_output_is_never_touched(reports, tmp_path, capsys):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    assert main(["report", str(reports["a"]), "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.md"] and (out / "notes.md").read_text() == "mine"


def test_differ_takes_only_compared_fields(reports, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(reports["a"]), "--differ", "seed", "--out", str(tmp_path / "m")])
    assert exit_.value.code == 2 and "seed not of " + ", ".join(FIELDS) in capsys.readouterr().err


def test_printed_numbers_hold():
    """Bounds round up from their exact binary value; a failure probability rounds up past float noise only."""
    assert bound_cell(0.12341) == "0.1235" and bound_cell(0.1234) == "0.1234"  # 0.1234 is 0.12339999... in binary
    assert bound_cell(math.nextafter(0.125, 1)) == "0.1251" and bound_cell(None) == ""
    assert failure_text(0.05 + 0.05 + 0.05) == "0.15" and failure_text(0.123456) == "0.1235"
    assert failure_text(0.05 / 7 * 7) == "0.05" and failure_text(0.0500001) == "0.05001"


def test_help_imports_neither_torch_nor_matplotlib():
    code = (
        "import sys\nfrom tokenbounds.cli import main\n"
        "try:\n    main(['report', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, 'imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
