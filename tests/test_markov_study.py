"""`tokenbounds study markov --size smallest` (CI's configuration) runs end to end, pays log2(rows) for its best
row, resumes interrupted rows to the very same result, and refuses another configuration on --resume and an order
whose counts would not fit in --max-memory (with the estimate), before any row runs."""

import json
import math
import shutil
from dataclasses import replace

import pytest

from tokenbounds.cli import main
from tokenbounds.pipeline import compute_bound
from tokenbounds.studies.markov import markov_study
from tokenbounds.studies.markov_sizes import SIZES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALLEST = ["study", "markov", "--size", "smallest"]
ROWS = ["markov-k0", "markov-k1", "markov-k2", "gpt-k1", "gpt-k2"]
GIB = 2**30


def without_seconds(summary: dict) -> dict:
    return {**summary, "results": [{k: v for k, v in r.items() if k != "seconds"} for r in summary["results"]]}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("markov-study") / "run"
    assert main([*SMALLEST, "--out", str(out)]) == 0
    yield out
    torch.set_num_threads(threads)  # the CLI set its --threads for this process


def test_smallest_study_writes_json_table_and_plot(finished):
    summary = json.loads((finished / "study.json").read_text())
    assert [r["key"] for r in summary["results"]] == ROWS and summary["paid_bits"] == math.log2(5)
    for r in summary["results"]:
        assert r["bound"]["extra_bits"] == math.log2(5) and r["bound"]["empirical"] < r["bound"]["bound"]
        report = json.loads((finished / "rows" / f"{r['key']}.json").read_text())["report"]
        k = r["params"]["k"]
        assert report["mode"] == "token" and report["context"] == max(k, 1)  # the document rule with L = k
        assert report["hypothesis"]["backend"] == ("tokenbounds-markov" if r["params"]["model"] == "markov" else
                                                   "tokenbounds-gpt")  # fmt: skip
    chain = json.loads((finished / "rows" / "markov-k2.json").read_text())["report"]
    assert chain["message_bits"] == 8 * (finished / "markov" / "k2" / "counts.tbmc").stat().st_size
    assert chain["prior"]["source"] == "Markov count-table message"
    table = (finished / "study.md").read_text()
    assert "## context" in table and f"**{summary['best']['bound']:.3f}**" in table
    assert (finished / "plots" / "context.png").read_bytes().startswith(b"\x89PNG")


def test_the_best_row_paid_log2_rows(finished):
    summary = json.loads((finished / "study.json").read_text())
    study = markov_study(SIZES["smallest"], "smallest", GIB)
    row = next(r for r in study.rows if r.key == summary["best"]["key"])
    request = row.build(finished).request  # already built: nothing is counted or trained again
    paid = compute_bound(replace(request, extra_bits=math.log2(5)))
    assert paid["best_bits_per_token"]["bound"] == summary["best"]["bound"]
    assert compute_bound(request)["best_bits_per_token"]["bound"] < summary["best"]["bound"]


def test_interrupted_rows_resume_to_the_same_study(finished, tmp_path):
    """A chain interrupted while written (a .partial left behind) and a GPT row interrupted after training, before
    quantizing: --resume rebuilds exactly those rows and writes the same study.json."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for key in ("markov-k1", "gpt-k2"):
        (run / "rows" / f"{key}.json").unlink()
    shutil.move(run / "markov" / "k1", run / "markov" / "k1.partial")
    shutil.rmtree(run / "quantized" / "k2")
    assert main([*SMALLEST, "--out", str(run), "--resume"]) == 0
    assert not (run / "markov" / "k1.partial").exists()
    again, first = (json.loads((d / "study.json").read_text()) for d in (run, finished))
    assert without_seconds(again) == without_seconds(first)


def test_resume_refuses_another_configuration(finished, capsys):
    assert main([*SMALLEST, "--out", str(finished), "--resume", "--orders", "0,1"]) == 2
    assert "another study configuration" in capsys.readouterr().err


def test_an_order_over_max_memory_is_refused_with_its_estimate(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SMALLEST, "--out", str(out), "--orders", "0,40", "--max-memory", "0.01"]) == 2
    err = capsys.readouterr().err.strip()
    assert "order 40 may need" in err and "GiB" in err and "--max-memory 0.01 GiB" in err and "\n" not in err
    assert not list((out / "rows").iterdir())  # refused before any row ran
