"""`tokenbounds report RUNS... --out DIR`: bound reports and studies merged into one table, a JSON file and plots.

Flags come from ReportConfig; the merge (standard library only) names the fields that `--differ` may list, and
matplotlib is imported only when the plots are drawn.
"""

from dataclasses import dataclass
from pathlib import Path

from tokenbounds.config import add_flags, flag, parse_config
from tokenbounds.errors import UserError
from tokenbounds.files import holds_something
from tokenbounds.report.merge import FIELDS


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    runs: tuple[str, ...] = flag(
        help="bound reports (`bound --json`), study directories (or their study.json), study rows (rows/KEY.json), "
        "or directories of them",
        metavar="RUN",
        positional=True,
    )
    out: str = flag(help="new directory for report.md, report.json and plots/ (refused if not empty)", metavar="DIR")
    differ: tuple[str, ...] = flag(
        (),
        choices=FIELDS,
        metavar="F1,F2,...",
        default_text="none: every run must share them all",
        help="fields the runs may differ in on purpose, each then a column of the table; runs that differ in any "
        "other compared field are refused",
    )


def add_parser(sub):
    p = sub.add_parser(
        "report",
        help="merge bound reports and studies into one markdown table, a JSON file and plots",
        description="Merge bound reports and studies into one table (report.md), its rows (report.json) and plots "
        "(plots/: bound and empirical risk against alpha, against message bits per parameter, and each study's "
        "groups). Runs of different corpora (token count, shards, end-of-text id) or configurations (context rule, "
        "method, mode, delta, samples, UCB, alpha / k / lambda grids) are refused unless --differ names the field. "
        "Each row holds on its own with probability >= 1 - delta; the report says how surely all hold together.",
    )
    return add_flags(p, ReportConfig)


def run(args) -> int:
    from tokenbounds.report.io import write_json
    from tokenbounds.report.merge import format_report, merge, read_runs
    from tokenbounds.report.merge_plots import plot_merged

    cfg, _ = parse_config(ReportConfig, args)
    out = Path(cfg.out)
    if holds_something(out):
        raise UserError(f"{out} exists and is not empty: choose a new --out")
    runs = read_runs(list(cfg.runs))
    merged = merge(runs, cfg.differ)  # every refusal comes before anything is written
    plots = [str(p.relative_to(out)) for p in plot_merged(merged, runs, out / "plots")]
    write_json(out / "report.json", {**merged, "plots": plots})
    text = format_report(merged, plots)
    (out / "report.md").write_text(text)
    print(text.split("\n\n![")[0].rstrip())
    print(f"wrote {out / 'report.md'}, {out / 'report.json'} and {len(plots)} plots in {out / 'plots'}")
    return 0
