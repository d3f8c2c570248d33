"""The merged report's PNG plots (matplotlib, Agg): drawn from report.json's rows, nothing recomputed.

    alpha-I-NAME.png          bound and empirical risk against the smoothing alpha, every row of run I
    bits_per_parameter.png    each row's best bound and empirical risk against its message bits per parameter
                              (rows whose prior records the parameters it describes), one colour per run
    study-I-NAME-GROUP.png    a study's group: bound and empirical against the one numeric parameter the group
                              varies, or one pair of bars per row (labelled) when it varies another kind or several

Drawn here rather than by tokenbounds.studies.plots, which the report part may not import (it sits a layer above):
that module draws a study's figures from the study's own plot specifications, which study.json does not record, so
the per-study figures here are made from what it records (each group's params).
"""

import re
from pathlib import Path

BOUND, EMPIRICAL = "bound", "empirical"


def _name(text: str) -> str:
    """A file-name-safe form of a run's name (a.json: a) or a group."""
    name = Path(text).stem if text.endswith(".json") else Path(text).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name or text).strip("_") or "run"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never a window, whatever the user's backend
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, ax, path: Path, xlabel: str, title: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("bits per token")
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside: many rows hide the lines
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _log_x_if_wide(ax, xs: list[float]) -> None:
    if min(xs) > 0 and max(xs) >= 10 * min(xs):  # a decade or more: a linear axis crowds the small values
        ax.set_xscale("log")


def _row_name(row: dict) -> str:
    return f"{row['group']}: {row['label']}" if row["group"] is not None else Path(row["run"]).name


def _alpha_plot(plt, rows: list[dict], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    if len(rows) > 10:  # the default cycle repeats after 10 colours
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    for i, row in enumerate(rows):
        xs = [c["alpha"] for c in row["curve"]]
        (line,) = ax.plot(xs, [c[BOUND] for c in row["curve"]], "o-", ms=3, label=f"{_row_name(row)}: bound")
        label = "dashed: empirical" if i == 0 else None
        ax.plot(xs, [c[EMPIRICAL] for c in row["curve"]], "s--", ms=3, color=line.get_color(), label=label)
    ax.set_xscale("log")
    ax.axhline(rows[0]["log2_vocab"], color="grey", lw=0.8, label="log2 V (random guessing)")
    return _save(plt, fig, ax, path, "smoothing alpha", title)


def _bits_per_parameter_plot(plt, merged: dict, path: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    drawn = False
    for run in merged["runs"]:
        rows = [r for r in merged["rows"] if r["run"] == run["run"] and r["bits_per_parameter"] is not None]
        if rows:
            xs = [r["bits_per_parameter"] for r in rows]
            points = ax.scatter(xs, [r[BOUND] for r in rows], marker="o", label=f"{_name(run['run'])}: bound")
            ax.scatter(xs, [r[EMPIRICAL] for r in rows], marker="x", color=points.get_facecolor(), label=EMPIRICAL)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    _log_x_if_wide(ax, [r["bits_per_parameter"] for r in merged["rows"] if r["bits_per_parameter"] is not None])
    return _save(plt, fig, ax, path, "message bits per parameter", "best bound against bits per parameter")


def _varied(rows: list[dict]) -> list[str]:
    """The params that take more than one value among a group's rows, in first-seen order."""
    names = list(dict.fromkeys(k for r in rows for k in r["params"]))
    return [k for k in names if len({repr(r["params"].get(k)) for r in rows}) > 1]


def _group_plot(plt, rows: list[dict], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    varied = _varied(rows)
    values = [r["params"].get(varied[0]) for r in rows] if len(varied) == 1 else []
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        ordered = sorted(rows, key=lambda r: r["params"][varied[0]])
        xs = [r["params"][varied[0]] for r in ordered]
        ax.plot(xs, [r[BOUND] for r in ordered], "o-", label=BOUND)
        ax.plot(xs, [r[EMPIRICAL] for r in ordered], "s--", label=EMPIRICAL)
        _log_x_if_wide(ax, xs)
        xlabel = varied[0]
    else:
        at = range(len(rows))
        ax.bar([x - 0.2 for x in at], [r[BOUND] for r in rows], 0.4, label=BOUND)
        ax.bar([x + 0.2 for x in at], [r[EMPIRICAL] for r in rows], 0.4, label=EMPIRICAL)
        ax.set_xticks(list(at), [r["label"] for r in rows], rotation=20, fontsize="small")
        xlabel = ", ".join(varied) or "row"
    return _save(plt, fig, ax, path, xlabel, title)


def plot_merged(merged: dict, runs: list, out: Path) -> list[Path]:
    """Every plot of the merged report into `out` (created); returns the files written."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, run in enumerate(runs, 1):
        title = f"{run.name}: bound and empirical risk against alpha"
        written.append(_alpha_plot(plt, run.rows, out / f"alpha-{i}-{_name(run.name)}.png", title))
    path = _bits_per_parameter_plot(plt, merged, out / "bits_per_parameter.png")
    written += [path] if path is not None else []
    for i, run in enumerate(runs, 1):
        if run.study is None:
            continue
        groups: dict[str, list[dict]] = {}
        for row in run.rows:
            groups.setdefault(row["group"], []).append(row)
        for group, rows in groups.items():
            title = f"{run.study['study']} ({_name(run.name)}): {group}, each bound paid log2 {len(run.rows)} bits"
            written.append(_group_plot(plt, rows, out / f"study-{i}-{_name(run.name)}-{_name(group)}.png", title))
    return written
