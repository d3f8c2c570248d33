"""`tokenbounds quickstart`: train, compress and bound a GPT on the embedded corpus, offline, on a CPU.

Flags come from QuickstartConfig, which the report records; the pipeline (and torch) is imported in `run`.
"""

import time
from dataclasses import replace
from pathlib import Path

from tokenbounds.config import add_flags, parse_config
from tokenbounds.errors import UserError
from tokenbounds.files import holds_something
from tokenbounds.quickstart_config import QuickstartConfig
from tokenbounds.report.io import check_writable, write_json


def add_parser(sub):
    p = sub.add_parser(
        "quickstart",
        help="the whole pipeline on the embedded Shakespeare corpus, ending in a non-vacuous bound",
        description="Offline, on a CPU: tokenize the embedded Shakespeare corpus into bytes, train a small SubLoRA "
        "GPT, quantize and arithmetic-code its free parameters, and bound the decoded model on its training corpus "
        "(entropy-centred empirical-Bernstein bound, block sampling, betting confidence bound). Prints the table "
        "and writes the JSON and markdown reports into the output directory.",
    )
    return add_flags(p, QuickstartConfig)


def run(args) -> int:
    cfg, _ = parse_config(QuickstartConfig, args)
    out = Path(cfg.out) if cfg.out else Path("runs") / time.strftime("quickstart-%Y%m%d-%H%M%S")
    if holds_something(out):
        raise UserError(f"{out} exists and is not empty; choose a new --out")
    check_writable(cfg.json, cfg.force)
    from tokenbounds.quickstart import run_quickstart
    from tokenbounds.report.markdown import format_markdown
    from tokenbounds.report.table import format_bound_table

    report = run_quickstart(out, replace(cfg, out=str(out)))  # the report records the directory chosen
    print(format_bound_table(report))
    write_json(out / "report.json", report)
    (out / "report.md").write_text(format_markdown(report, "tokenbounds quickstart"))
    if cfg.json:
        write_json(cfg.json, report)
    print(f"reports: {out / 'report.json'}, {out / 'report.md'}")
    return 0
