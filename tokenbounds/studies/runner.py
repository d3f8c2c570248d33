"""The study runner: a grid of rows, each a valid bound of its own, run in order and resumable row by row.

A row fixes a hypothesis (trained or quantized into the run directory by the row's builder), the data and a bound
configuration. Reporting the *best* row of a study as the bound is a choice made after seeing every row's bound, so
the runner pays for it in every row, before any row is scored. With R rows,

    extra_bits = (the user's extra bits) + log2(R)

in every row's BoundRequest. The prior charges those bits to the martingale term (complexity C + log2 R), and the
pipeline divides each statistic's subsampling delta by 2^(extra bits that could have seen the subsample), which
include `extra_bits`: delta_2 / R. Each row's bound then holds with probability >= 1 - delta / R for both terms, so
by a union bound over the R rows all of them, and hence their minimum, hold together with probability >= 1 - delta.
study.json records `rows` (R) and `paid_bits` (log2 R).

Run directory:
    config.json       the study's name, configuration and row keys; --resume refuses a directory with others
    rows/KEY.json     one finished row: its summary and full bound report (written to a temporary name, renamed)
    ...               what the builders make (data, trained models, quantized directories)
    study.json        every row's summary, the best row, rows and paid_bits
    study.md          a markdown table per group of rows
    plots/GROUP.png   bound and empirical risk against each group's variable
"""

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tokenbounds.errors import UserError
from tokenbounds.files import holds_something
from tokenbounds.pipeline import BoundRequest, compute_bound
from tokenbounds.report.io import write_json
from tokenbounds.studies.plots import Plot, plot_study
from tokenbounds.studies.report import format_study

CONFIG_FILE = "config.json"
RULE = (
    "every row's bound pays log2(rows) extra bits (martingale term) and delta_2 / rows (subsampling term), so the "
    "best row may be reported as the bound"
)


@dataclass(frozen=True)
class RowBuild:
    """What a row's builder returns: the bound to compute on the hypothesis it built, and what to record about it."""

    request: BoundRequest  # with extra_bits = 0: the runner adds the user's and the study's
    facts: dict = field(default_factory=dict)  # JSON values describing the hypothesis (free parameters, ...)
    seconds: dict = field(default_factory=dict)  # timings: the only fields that differ between equal runs


@dataclass(frozen=True)
class Row:
    key: str  # stable and file-name safe: the finished row is rows/KEY.json
    group: str  # the sub-study it belongs to: one table and one plot per group
    label: str  # how progress lines name it, e.g. "d=10000"
    params: dict  # what this row varies (JSON), one column each in its group's table
    build: Callable[[Path], RowBuild]  # run directory -> the hypothesis, built there (idempotent after interrupts)


@dataclass(frozen=True)
class Study:
    name: str
    config: dict  # JSON: everything that decides the rows' results; a resumed run must have the same
    rows: list[Row]
    extra_bits: float = 0.0  # the user's, added to every row before log2(rows)
    setup: Callable[[Path], None] | None = None  # run before the rows, on every start (idempotent)
    plots: tuple[Plot, ...] = ()

    def __post_init__(self):
        keys = [row.key for row in self.rows]
        if not keys:
            raise ValueError(f"study {self.name} has no rows")
        if len(set(keys)) != len(keys):
            raise ValueError(f"study {self.name} repeats a row key")
        bad = [k for k in keys if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", k)]
        if bad:
            raise ValueError(f"row keys must be file-name safe, got {bad}")

    def identity(self) -> dict:
        """What config.json holds, JSON round-tripped (tuples become lists) so that it compares with a read file."""
        record = {"study": self.name, "config": self.config, "extra_bits": self.extra_bits}
        return json.loads(json.dumps({**record, "rows": [row.key for row in self.rows]}))


def print_now(line: str) -> None:
    print(line, flush=True)


def _differences(saved: dict, wanted: dict) -> list[str]:
    flat = [({**a.get("config", {}), **{k: v for k, v in a.items() if k != "config"}}) for a in (saved, wanted)]
    keys = list(flat[1]) + [k for k in flat[0] if k not in flat[1]]  # the configuration's own order: size first
    return [f"{k}: {flat[0].get(k)!r} -> {flat[1].get(k)!r}" for k in keys if flat[0].get(k) != flat[1].get(k)]


def _open_run_dir(out: Path, identity: dict, resume: bool) -> None:
    """A new run directory, or (--resume) one this very study configuration started; UserError otherwise."""
    path = out / CONFIG_FILE
    if resume:
        if not path.is_file():
            raise UserError(f"cannot resume: {out} holds no study ({CONFIG_FILE} is missing)")
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"cannot resume: {path} is not valid JSON ({err})") from None
        diffs = _differences(saved, identity)
        if diffs:
            shown = "; ".join(diffs[:6]) + ("; ..." if len(diffs) > 6 else "")
            raise UserError(f"cannot resume: {out} holds another study configuration ({shown}); choose a new --out")
        return
    if holds_something(out):
        raise UserError(f"{out} exists and is not empty: choose a new --out, or pass --resume to continue its study")
    (out / "rows").mkdir(parents=True, exist_ok=True)
    write_json(path, identity)


def _run_row(row: Row, out: Path, extra_bits: float, paid_bits: float) -> dict:
    started = time.perf_counter()
    hypothesis = row.build(out)
    if hypothesis.request.extra_bits != 0:
        raise ValueError(f"row {row.key}: a builder leaves extra_bits to the runner")
    report = compute_bound(replace(hypothesis.request, extra_bits=extra_bits))
    best = report["best_bits_per_token"]
    top1 = next((r["bound"] for r in report["results"] if r.get("k") == 1), None)
    bound = {
        "bound": best["bound"],
        "empirical": best["empirical"],
        "alpha": best["alpha"],
        "top1_error_bound": top1,
        "message_bits": report["message_bits"],
        "extra_bits": report["extra_bits"],
        "paid_bits": paid_bits,
        "delta": report["delta"],
        "samples": report["samples"],
    }
    seconds = {**hypothesis.seconds, "score_seconds": report["timing"]["score_seconds"]}
    seconds["row_seconds"] = time.perf_counter() - started
    record = {"key": row.key, "group": row.group, "label": row.label, "params": row.params, "facts": hypothesis.facts}
    return json.loads(json.dumps({**record, "bound": bound, "seconds": seconds, "report": report}))


def run_study(study: Study, out: str | Path, resume: bool = False, log=print_now) -> dict:
    """Run (or, with resume, finish) `study` in the directory `out`; write and return study.json's contents."""
    out = Path(out)
    _open_run_dir(out, study.identity(), resume)
    n = len(study.rows)
    paid = math.log2(n)
    if study.setup is not None:
        study.setup(out)
    records = []
    for i, row in enumerate(study.rows, 1):
        path = out / "rows" / f"{row.key}.json"
        if path.is_file():  # finished before the interruption: its bound already paid for this study's rows
            record = json.loads(path.read_text())
            log(f"row {i}/{n} {row.label}: bound {record['bound']['bound']:.3f} bits/token (done before)")
        else:
            record = _run_row(row, out, study.extra_bits + paid, paid)
            write_json(path, record)
            log(f"row {i}/{n} {row.label}: bound {record['bound']['bound']:.3f} bits/token, "
                f"{record['seconds']['row_seconds']:.0f} s")  # fmt: skip
        records.append({k: v for k, v in record.items() if k != "report"})
    best = min(records, key=lambda r: r["bound"]["bound"])
    summary = {
        "study": study.name,
        "config": study.config,
        "rows": n,
        "user_extra_bits": study.extra_bits,
        "paid_bits": paid,
        "rule": RULE,
        "best": {"key": best["key"], "label": best["label"], **best["bound"]},
        "results": records,
    }
    summary = json.loads(json.dumps(summary))
    write_json(out / "study.json", summary)
    (out / "study.md").write_text(format_study(summary))
    plot_study(summary, study.plots, out / "plots")
    return summary
