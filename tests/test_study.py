"""Studies: the runner pays log2(rows) in every row, resumes row by row to the very same result, and refuses run
directories it did not start or that hold another configuration; `tokenbounds study compression --size smallest`
(CI's configuration) runs end to end."""

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tokenbounds.cli import main
from tokenbounds.pipeline import BoundRequest, compute_bound
from tokenbounds.studies import building, runner
from tokenbounds.studies.compression import compression_study
from tokenbounds.studies.compression_sizes import SIZES, SUB_STUDIES
from tokenbounds.studies.runner import Row, RowBuild, Study, run_study

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALLEST = ["study", "compression", "--size", "smallest"]


def without_seconds(summary: dict) -> dict:
    """study.json minus its timings: the only fields two runs of one configuration may differ in."""
    return {**summary, "results": [{k: v for k, v in r.items() if k != "seconds"} for r in summary["results"]]}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted run of the smallest study."""
    import torch

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("whole") / "run"
    assert main([*SMALLEST, "--out", str(out)]) == 0
    yield out
    torch.set_num_threads(threads)  # the CLI set its --threads for this process


def test_smallest_study_writes_json_table_and_plots(finished):
    summary = json.loads((finished / "study.json").read_text())
    groups = {r["group"] for r in summary["results"]}
    assert groups == set(SUB_STUDIES) and summary["rows"] == len(summary["results"]) == 13
    assert summary["paid_bits"] == math.log2(13) and summary["user_extra_bits"] == 0
    for r in summary["results"]:
        assert r["bound"]["extra_bits"] == math.log2(13) and r["bound"]["empirical"] < r["bound"]["bound"]
        assert (finished / "rows" / f"{r['key']}.json").is_file()
    best = min(summary["results"], key=lambda r: r["bound"]["bound"])
    assert summary["best"]["key"] == best["key"] and summary["best"]["bound"] == best["bound"]["bound"]
    table = (finished / "study.md").read_text()
    assert all(f"## {g}" in table for g in SUB_STUDIES) and f"**{best['bound']['bound']:.3f}**" in table
    for group in SUB_STUDIES:
        assert (finished / "plots" / f"{group}.png").read_bytes().startswith(b"\x89PNG")


def test_best_row_paid_log2_rows(finished):
    summary = json.loads((finished / "study.json").read_text())
    study = compression_study(SIZES["smallest"], "smallest")
    row = next(r for r in study.rows if r.key == summary["best"]["key"])
    request = row.build(finished).request  # the hypothesis is already there: built again without training
    assert request.extra_bits == 0
    paid = compute_bound(replace(request, extra_bits=math.log2(13)))
    assert paid["best_bits_per_token"]["bound"] == summary["best"]["bound"]
    unpaid = compute_bound(request)
    assert unpaid["best_bits_per_token"]["bound"] < summary["best"]["bound"]


def interrupt_call(n: int, real, leave_behind=None):
    """`real`, except that its n-th call is cut short by a KeyboardInterrupt (after leaving `leave_behind(args)`)."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            if leave_behind is not None:
                leave_behind(*args)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return wrapper


def half_written(where: int):
    """A directory argument left as an interrupted writer leaves it: created, with one file in it."""

    def leave(*args):
        Path(args[where]).mkdir(parents=True)
        (Path(args[where]) / "spec.json").write_text("{")

    return leave


@pytest.mark.parametrize(
    "module,name,n,leave,done",
    [
        # the second row's model is trained and quantized; its bound is cut short
        (runner, "compute_bound", 2, None, ["time-step25"]),
        # the second row's quantized directory is half written
        (building, "quantize_model", 2, half_written(1), ["time-step25"]),
        # the third row's model (a new one) is interrupted before its first checkpoint
        (building, "train", 3, half_written(3), ["time-step25", "time-step50"]),
    ],
    ids=["in-bound", "in-quantize", "in-train"],
)
def test_an_interrupted_study_resumes_to_the_uninterrupted_result(
    finished, tmp_path, monkeypatch, capsys, module, name, n, leave, done
):
    out = tmp_path / "run"
    monkeypatch.setattr(module, name, interrupt_call(n, getattr(module, name), leave))
    assert main([*SMALLEST, "--out", str(out)]) == 130
    assert sorted(p.stem for p in (out / "rows").iterdir()) == done and not (out / "study.json").exists()
    first = (out / "rows" / "time-step25.json").read_bytes()

    monkeypatch.undo()
    calls = []
    monkeypatch.setattr(runner, "compute_bound", lambda request: calls.append(request.model) or compute_bound(request))
    capsys.readouterr()
    assert main([*SMALLEST, "--out", str(out), "--resume"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("row 1/13 step=25: bound") and lines[0].endswith("(done before)")
    assert lines[len(done)].startswith(f"row {len(done) + 1}/13 ") and lines[len(done)].endswith(" s")
    assert len(calls) == 13 - len(done) and (out / "rows" / "time-step25.json").read_bytes() == first  # not redone
    resumed = json.loads((out / "study.json").read_text())
    assert without_seconds(resumed) == without_seconds(json.loads((finished / "study.json").read_text()))


def one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(n in err for n in needles), err


def test_run_directories_are_never_overwritten_or_mixed(finished, tmp_path, capsys):
    before = {p: p.read_bytes() for p in finished.rglob("*.json")}
    one_line_error(capsys, [*SMALLEST, "--out", str(finished)], "not empty", "--resume")
    changed = "studies: ['time', 'dim', 'param', 'levels'] -> ['time', 'dim']"
    one_line_error(capsys, [*SMALLEST, "--out", str(finished), "--resume", "--studies", "time,dim"], "another", changed)
    one_line_error(
        capsys, ["study", "compression", "--out", str(finished), "--resume"], "size: 'smallest' -> 'default'"
    )
    one_line_error(
        capsys, [*SMALLEST, "--out", str(finished), "--resume", "--extra-bits", "1"], "extra_bits: 0.0 -> 1.0"
    )
    assert {p: p.read_bytes() for p in finished.rglob("*.json")} == before
    one_line_error(capsys, [*SMALLEST, "--out", str(tmp_path / "none"), "--resume"], "holds no study")
    one_line_error(capsys, [*SMALLEST, "--out", str(tmp_path / "x"), "--studies", "time,speed"], "--studies")
    one_line_error(capsys, [*SMALLEST, "--out", str(tmp_path / "x"), "--threads", "0"], "--threads")
    assert not (tmp_path / "x").exists()


def test_every_row_pays_log2_rows_on_top_of_the_users_extra_bits(tmp_path, tiny_gpt2, tiny_corpus):
    request = BoundRequest(model=str(tiny_gpt2), data=str(tiny_corpus), method="eb", mode="block",
                           subsample_ucb="betting", samples=32, context=16, stride=8, message_bits=5000,
                           progress=False)  # fmt: skip
    rows = [
        Row(f"r{i}", "g", f"row {i}", {"i": i}, lambda out, i=i: RowBuild(replace(request, seed=i))) for i in range(4)
    ]
    summary = run_study(Study("fake", {"n": 4}, rows, extra_bits=1.0), tmp_path / "run", log=lambda line: None)
    assert summary["rows"] == 4 and summary["paid_bits"] == 2.0
    for i, r in enumerate(summary["results"]):
        report = json.loads((tmp_path / "run" / "rows" / f"r{i}.json").read_text())["report"]
        assert report["prior"]["user_extra_bits"] == 3.0  # 1 of the user's + log2 4
        direct = compute_bound(replace(request, seed=i, extra_bits=3.0))["best_bits_per_token"]["bound"]
        assert r["bound"]["bound"] == direct
    broken = [Row("r", "g", "row", {}, lambda out: RowBuild(replace(request, extra_bits=1.0)))]
    with pytest.raises(ValueError, match="extra_bits to the runner"):
        run_study(Study("fake", {}, broken), tmp_path / "other", log=lambda line: None)


def test_study_help_does_not_import_torch():
    code = (
        "import argparse, sys\n"
        "from tokenbounds.cli import study\n"
        "p = argparse.ArgumentParser(); study.add_parser(p.add_subparsers())\n"
        "try:\n    p.parse_args(['study', 'compression', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, 'heavy import'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert "--size {smallest,default,paper}" in done.stdout
