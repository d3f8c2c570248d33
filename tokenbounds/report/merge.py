"""`tokenbounds report`: bound reports and studies merged into one table, refusing to mix what should not be mixed.

A run is one bound report (`bound --json`), one study row (a study's rows/KEY.json) or one study directory (its
study.json and rows/); a directory of them is read in name order (an unfinished study there is refused, not left
out). Every merged row is one bound report.

What the rows must share (COMPARED), unless named in `differ` (then each such field is a column):

    data            what was bounded on: the corpus's token count, shard count and end-of-text id. The report
                    records no content hash, so two corpora of exactly that shape are not told apart; paths are
                    never compared (a study prepares its corpus inside its own run directory).
    rule, context, stride
                    the context rule, part of the predictor whose risk is bounded
    method, mode, delta, samples, subsample_ucb, alphas, topk, lambdas
                    how the bound was computed: its confidence, its units, its union over statistics

What may differ (what a table compares): the hypothesis and its prior (model, message and extra bits, compute
dtype), the seed (independent draws of the same computation), and what is no part of the result: timings, paths,
devices, batch sizes, progress bars. A study's own rows may differ in anything (the study varies them by design and
pays for its rows); runs are compared by the set of values their rows take, so two studies varying the context
over the same values merge.

How surely the table holds. A report's numbers all hold together with probability >= 1 - delta. A study's row paid
log2 R extra bits for its study's R rows (complexity and subsampling delta), so on its own it fails with probability
<= delta / R, and its study's rows all hold together with >= 1 - delta. By a union bound, every row of the table
holds together with probability >= 1 - (the sum of the runs' failure probabilities): a report's delta, a study's
delta / R per row, and a study row given alone its whole delta (it may have been picked from its study by its
bound). That covers the runs given here, not runs left out after seeing them.
"""

import json
import math
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from pathlib import Path

from tokenbounds.errors import UserError

STUDY_FILE = "study.json"
STUDY_CONFIG = "config.json"
LIST_SHOWN = 12  # a longer grid (eb's 42 lambdas) is shown by its size and ends


def _data(report: dict):
    """The corpus' identity: its content digest where the report has one (same tokens, whatever the path)."""
    data = report["data"]
    return {k: data.get(k) for k in ("n_tokens", "shards", "eot", "content_sha256")}


def _grid(report: dict, statistic: str, key: str) -> list:
    return [r[key] for r in report["results"] if r["statistic"] == statistic]


# The fields every row of a table shares unless `differ` names them: name -> its value in a bound report.
COMPARED = {
    "data": _data,
    "rule": lambda r: r["hypothesis"]["context_rule"]["kind"],
    "context": lambda r: r["context"],
    "stride": lambda r: r["stride"],
    "method": lambda r: r["method"],
    "mode": lambda r: r["mode"],
    "delta": lambda r: r["delta"],
    "samples": lambda r: r["samples"],
    "subsample_ucb": lambda r: r["subsample_ucb"],
    "alphas": lambda r: _grid(r, "bits_per_token", "alpha"),
    "topk": lambda r: _grid(r, "top_k_error", "k"),
    "lambdas": lambda r: r["lambdas"],
}
FIELDS = tuple(COMPARED)


def show(name: str, value) -> str:
    """A field's value as the table and the error messages print it."""
    if name == "data":
        digest = f", sha256 {value['content_sha256'][:12]}" if value.get("content_sha256") else ""
        return f"{value['n_tokens']:,} tokens in {value['shards']} shard(s), eot {value['eot']}{digest}"
    if value is None:
        return "none"
    if isinstance(value, list) and len(value) > LIST_SHOWN:
        return f"{len(value)} values from {show(name, value[0])} to {show(name, value[-1])}"
    if isinstance(value, list):
        return ",".join(show(name, v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _key(value) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass
class Run:
    """One input: its rows (each built from one bound report) and the probability that any of them fails."""

    name: str
    kind: str  # "report", "study row" or "study"
    rows: list[dict]
    failure: float
    study: dict | None = None  # study.json's contents, for a study
    values: dict = field(init=False)  # field -> {canonical JSON: value} over the rows

    def __post_init__(self):
        self.values = {f: {_key(r["fields"][f]): r["fields"][f] for r in self.rows} for f in FIELDS}

    def shown(self, name: str, exact: bool = False) -> str:
        values = [k if exact else show(name, v) for k, v in sorted(self.values[name].items())]
        return values[0] if len(values) == 1 else "{" + "; ".join(values) + "}"


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a float")
    return value


def read_json(path: Path) -> dict:
    """A JSON object from `path`; NaN and Infinity (Python's json reads them, and 1e999 as inf) are refused, like
    any non-JSON."""
    try:
        value = json.loads(path.read_text(), parse_constant=_refuse_constant, parse_float=_finite)
    except (OSError, UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise UserError(f"{path} is not a readable JSON file ({err})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is not a bound report, a study row or a study.json (not a JSON object)")
    return value


def _priced_parameters(report: dict) -> int | None:
    """How many parameters the prior's message describes, where the report records it (a quantized message or a
    priced checkpoint); None for a prior given as --message-bits."""
    n = report["prior"].get("n_parameters")
    return n if isinstance(n, int) and n > 0 else None


def _hypothesis(report: dict) -> str:
    h = report["hypothesis"]
    name = Path(str(h.get("source", ""))).name or "?"
    weights = f"{h['n_parameters']:,}" if isinstance(h.get("n_parameters"), int) else "?"
    return f"{name} ({h.get('architecture')}, {weights} weights, {h.get('compute_dtype')})"


def row_from_report(report: dict, where: str, study_row: dict | None = None, paid: float = 0.0) -> dict:
    """One table row from one bound report (`study_row`: its study's record of it, which paid `paid` bits for the
    study's rows); UserError, naming `where`, if the report is incomplete or inconsistent."""
    try:
        curve = [
            {"alpha": r["alpha"], "empirical": r["empirical"], "bound": r["bound"]}
            for r in report["results"]
            if r["statistic"] == "bits_per_token"
        ]
        best = report["best_bits_per_token"]
        consistent = bool(curve) and min(c["bound"] for c in curve) == best["bound"]
        if study_row is not None:
            consistent = consistent and study_row["bound"]["bound"] == best["bound"]
        top1 = next((r["bound"] for r in report["results"] if r["statistic"] == "top_k_error" and r["k"] == 1), None)
        parameters = _priced_parameters(report)
        row = {
            "run": where,
            "study": None,
            **{k: None if study_row is None else study_row[k] for k in ("group", "key", "label")},
            "params": {} if study_row is None else study_row["params"],
            "hypothesis": _hypothesis(report),
            "hypothesis_source": report["hypothesis"].get("source"),
            "fields": {name: value(report) for name, value in COMPARED.items()},
            "alpha": best["alpha"],
            "empirical": best["empirical"],
            "bound": best["bound"],
            "top1_error_bound": top1,
            "log2_vocab": report["log2_vocab"],
            "message_bits": report["message_bits"],
            "extra_bits": report["extra_bits"],
            "priced_parameters": parameters,
            "bits_per_parameter": report["message_bits"] / parameters if parameters else None,
            "failure": _failure(report, paid, where),
            "curve": curve,
        }
    except (KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{where} is not a complete bound report (missing or malformed {err})") from None
    if not consistent:
        raise UserError(f"{where}: its best bound is not the least bits-per-token bound of its results (edited?)")
    return row


def _failure(report: dict, paid: float, where: str) -> float:
    """delta / 2^paid: a row that paid `paid` bits for its study's rows, in its complexity (the martingale term) and
    in its data-choice bits (the subsampling term's delta is divided by 2^those), fails with at most that probability.
    """
    if not (report["extra_bits"] >= paid and report["delta_split"]["data_choice_bits"] >= paid):
        raise UserError(f"{where}: its report did not pay the {paid:g} bits its study says every row paid")
    return report["delta"] * 2.0**-paid


def _is_study_row(value: dict) -> bool:
    return {"key", "group", "params", "bound", "report"} <= value.keys()


def _paid(value: dict, where: str) -> float:
    paid = value.get("paid_bits") if isinstance(value, dict) else None
    if not isinstance(paid, int | float) or isinstance(paid, bool) or not paid >= 0:
        raise UserError(f"{where} does not say how many bits its rows paid for the study (paid_bits)")
    return paid


def _study_row_run(record: dict, path: Path) -> Run:
    row = row_from_report(record["report"], str(path), record, _paid(record["bound"], str(path)))
    # Not delta / R: a row taken out of its study may have been chosen by its bound, so it is worth the whole
    # study's union (R rows at delta / R each).
    row["failure"] = record["report"]["delta"]
    return Run(str(path), "study row", [row], row["failure"])


def read_study(directory: Path) -> Run:
    """A finished study: study.json's rows, each with the full report of its rows/KEY.json."""
    summary = read_json(directory / STUDY_FILE)
    paid = _paid(summary, str(directory / STUDY_FILE))
    try:
        name, records, n = summary["study"], summary["results"], summary["rows"]
        keys = [str(r["key"]) for r in records]
    except (KeyError, TypeError) as err:
        raise UserError(f"{directory / STUDY_FILE} is not a study summary (missing {err})") from None
    if len(keys) != n or not n:
        raise UserError(f"{directory / STUDY_FILE} lists {len(keys)} rows but says it has {n}")
    rows = []
    for key, summary_row in zip(keys, records, strict=True):
        path = directory / "rows" / f"{key}.json"
        if not path.is_file():
            raise UserError(f"{directory} is missing rows/{key}.json, a row its study.json lists")
        record = read_json(path)
        if not _is_study_row(record) or record["key"] != key:
            raise UserError(f"{path} is not the study row {key} of {directory / STUDY_FILE}")
        if record["bound"] != summary_row.get("bound"):
            raise UserError(f"{directory / STUDY_FILE} and {path} disagree on the row's bound (edited since?)")
        rows.append(row_from_report(record["report"], f"{directory} row {key}", record, paid))
        rows[-1].update(run=str(directory), study=name)
    return Run(str(directory), "study", rows, sum(r["failure"] for r in rows), study=summary)


def _read_file(path: Path) -> Run:
    value = read_json(path)
    if path.name == STUDY_FILE and "study" in value:
        return read_study(path.parent)
    if _is_study_row(value):
        return _study_row_run(value, path)
    if {"results", "best_bits_per_token", "method"} <= value.keys():
        row = row_from_report(value, str(path))
        return Run(str(path), "report", [row], row["failure"])
    raise UserError(f"{path} is not a bound report (`tokenbounds bound --json`), a study row or a study.json")


def _runs_at(path: Path) -> list[Run]:
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if path.is_file():
        return [_read_file(path)]
    if (path / STUDY_FILE).is_file():
        return [read_study(path)]
    if _unfinished_study(path):
        raise UserError(f"{path} holds an unfinished study (no {STUDY_FILE}): finish it with `tokenbounds study "
                        "... --resume` first")  # fmt: skip
    # Reports and studies, finished or not (an unfinished one is refused, not left out); other folders are not runs.
    found = sorted(
        p
        for p in path.iterdir()
        if (p.is_file() and p.suffix == ".json") or (p / STUDY_FILE).is_file() or _unfinished_study(p)
    )
    if not found:
        raise UserError(f"{path} holds no bound report (*.json) and no study directory")
    return [run for p in found for run in _runs_at(p)]


def _unfinished_study(path: Path) -> bool:
    return (path / STUDY_CONFIG).is_file() and (path / "rows").is_dir() and not (path / STUDY_FILE).is_file()


def read_runs(paths: list[str]) -> list[Run]:
    """Every run named by `paths` (files, study directories, directories of them), in the order given."""
    runs, seen = [], {}
    for given in paths:
        for run in _runs_at(Path(given)):
            where = Path(run.name).resolve()
            if where in seen:
                raise UserError(f"{run.name} is given twice (also as {seen[where]})")
            seen[where] = run.name
            runs.append(run)
    return runs


def _two_values(first: Run, other: Run, name: str) -> tuple[str, str]:
    """How two runs' values of a field print; exactly (as JSON) where the short forms would read the same."""
    pair = first.shown(name), other.shown(name)
    return pair if pair[0] != pair[1] else (first.shown(name, exact=True), other.shown(name, exact=True))


def check_comparable(runs: list[Run], differ: tuple[str, ...]) -> None:
    """Refuse, in one line, two runs whose rows take other values of a field that `differ` does not name."""
    first = runs[0]
    for other in runs[1:]:
        fields = [f for f in FIELDS if f not in differ and first.values[f].keys() != other.values[f].keys()]
        if fields:
            what = ", ".join(f"{f} ({' vs '.join(_two_values(first, other, f))})" for f in fields)
            raise UserError(
                f"{first.name} and {other.name} differ in {what}; pass --differ {','.join(fields)} if they differ on "
                "purpose"
            )


def merge(runs: list[Run], differ: tuple[str, ...] = ()) -> dict:
    """report.json's contents: the rows of every run, the fields they share, those that vary, and how surely the
    whole table holds."""
    unknown = [f for f in differ if f not in COMPARED]
    if unknown:
        raise UserError(f"--differ {','.join(unknown)}: not a compared field; use some of {', '.join(FIELDS)}")
    check_comparable(runs, differ)
    rows = [row for run in runs for row in run.rows]
    varying = [f for f in FIELDS if f in differ or len({_key(r["fields"][f]) for r in rows}) > 1]
    return {
        "runs": [{"run": r.name, "kind": r.kind, "rows": len(r.rows), "failure": r.failure} for r in runs],
        "differ": list(differ),
        "varying": varying,
        "shared": {f: rows[0]["fields"][f] for f in FIELDS if f not in varying},
        "failure_together": sum(r.failure for r in runs),
        "rows": rows,
    }


def _cell(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def bound_cell(value: float | None) -> str:
    """A bound printed at 4 decimals, rounded up from its exact binary value: the printed number holds too."""
    if value is None:
        return ""
    return str(Decimal(value).quantize(Decimal("0.0001"), rounding=ROUND_CEILING))


def failure_text(failure: float) -> str:
    """A failure probability at 4 significant digits, rounded up. A sum of deltas carries float noise (0.05 * 3 is
    0.15000000000000002), which the 1e-12 relative slack absorbs rather than printing 0.1501."""
    exact = Decimal(failure) * (1 - Decimal("1e-12"))
    return f"{float(exact.quantize(Decimal(1).scaleb(exact.adjusted() - 3), rounding=ROUND_CEILING)):g}"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def format_report(merged: dict, plots: list[str]) -> str:
    """report.md: how surely the rows hold, what they share, one table, the plots."""
    rows, varying, runs, failure = merged["rows"], merged["varying"], merged["runs"], merged["failure_together"]
    if failure >= 1:
        together = "The runs' failure probabilities sum to 1 or more, so the rows make no joint statement."
    else:
        together = (
            f"By a union bound over the {_count(len(runs), 'run')} given here, all {_count(len(rows), 'row')} hold "
            f"together with probability >= 1 - {failure_text(failure)}; that covers no run left out after seeing it."
        )
    lines = [
        "# tokenbounds report",
        "",
        f"{_count(len(rows), 'row')} from {_count(len(runs), 'run')}. Bounds in bits per token (rounded up), each "
        "at its row's best alpha, a choice its report's union paid for. Each row holds on its own with probability "
        ">= 1 - delta; a study's rows, which paid log2(rows) extra bits each, hold all together with probability "
        f">= 1 - delta. {together}",
        "",
        "Shared by every row: " + "; ".join(f"{f} {show(f, v)}" for f, v in merged["shared"].items()) + ".",
        "",
    ]
    header = ["run", "row", *varying, "hypothesis", "message bits", "bits/param", "alpha", "empirical", "bound",
              "top-1 error bound"]  # fmt: skip
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * len(varying) + "---|" + "---:|" * 6]
    for r in rows:
        where = f"{r['group']}: {r['label']}" if r["group"] is not None else ""
        cells = [_cell(r["run"]), _cell(where), *(_cell(show(f, r["fields"][f])) for f in varying)]
        cells += [_cell(r["hypothesis"]), _cell(r["message_bits"]), _cell(r["bits_per_parameter"], 3)]
        cells += [f"{r['alpha']:g}", _cell(r["empirical"]), bound_cell(r["bound"]), bound_cell(r["top1_error_bound"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *(f"![{Path(p).stem}]({p})" for p in plots)]
    return "\n".join(lines) + "\n"
