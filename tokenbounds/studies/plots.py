"""A study's PNG plots: the bound and the empirical risk of a group's rows against the variable the group varies."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Plot:
    group: str  # the rows drawn; the file is plots/GROUP.png
    x: str  # a field of each row (its params, facts, bound or seconds)
    xlabel: str
    kind: str = "line"  # line: bound and empirical against x; bar: one pair of bars per row, labelled by x
    series: str | None = None  # line plots: a field whose values split the rows into separate lines
    log_x: bool = False


def field_of(record: dict, name: str):
    for section in ("params", "facts", "bound", "seconds"):
        if name in record[section]:
            return record[section][name]
    raise KeyError(f"row {record['key']} has no field {name!r}")


def _draw(ax, plot: Plot, records: list[dict]) -> None:
    if plot.kind == "bar":
        xs = range(len(records))
        ax.bar([x - 0.2 for x in xs], [r["bound"]["bound"] for r in records], 0.4, label="bound")
        ax.bar([x + 0.2 for x in xs], [r["bound"]["empirical"] for r in records], 0.4, label="empirical")
        ax.set_xticks(list(xs), [str(field_of(r, plot.x)) for r in records])
        return
    series: dict = {}
    for r in records:
        series.setdefault(field_of(r, plot.series) if plot.series else None, []).append(r)
    for name, rows in series.items():
        rows = sorted(rows, key=lambda r: field_of(r, plot.x))
        xs = [field_of(r, plot.x) for r in rows]
        prefix = "" if name is None else f"{name}: "
        (line,) = ax.plot(xs, [r["bound"]["bound"] for r in rows], "o-", label=f"{prefix}bound")
        ax.plot(xs, [r["bound"]["empirical"] for r in rows], "s--", color=line.get_color(), label=f"{prefix}empirical")
    if plot.log_x:
        ax.set_xscale("log")


def plot_study(summary: dict, plots: tuple[Plot, ...], out: Path) -> list[Path]:
    """One PNG per plot whose group has rows; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never a window, whatever the user's backend
    import matplotlib.pyplot as plt

    written = []
    for plot in plots:
        records = [r for r in summary["results"] if r["group"] == plot.group]
        if not records:
            continue
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        _draw(ax, plot, records)
        ax.set_xlabel(plot.xlabel)
        ax.set_ylabel("bits per token")
        ax.set_title(f"{summary['study']}: {plot.group} (each bound pays log2 {summary['rows']} bits)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{plot.group}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
