"""`tokenbounds quickstart`: train, compress and bound a GPT on the embedded corpus, offline, on a CPU."""

import time
from dataclasses import fields
from pathlib import Path

from tokenbounds.errors import UserError
from tokenbounds.files import holds_something
from tokenbounds.quickstart import QuickstartConfig, run_quickstart
from tokenbounds.report.io import check_writable, write_json
from tokenbounds.report.markdown import format_markdown
from tokenbounds.report.table import format_bound_table


def add_parser(sub):
    p = sub.add_parser(
        "quickstart",
        help="the whole pipeline on the embedded Shakespeare corpus, ending in a non-vacuous bound",
        description="Offline, on a CPU: tokenize the embedded Shakespeare corpus into bytes, train a small SubLoRA "
        "GPT, quantize and arithmetic-code its free parameters, and bound the decoded model on its training corpus "
        "(entropy-centred empirical-Bernstein bound, block sampling, betting confidence bound). Prints the table "
        "and writes the JSON and markdown reports into the output directory.",
    )
    p.add_argument("--out", metavar="DIR", help="new output directory (default: runs/quickstart-<time>)")
    p.add_argument("--json", metavar="OUT", help="also write the JSON report here")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    defaults = QuickstartConfig()
    p.add_argument("--steps", type=int, default=defaults.steps, help="training steps")
    p.add_argument("--subspace-dim", type=int, default=defaults.subspace_dim, help="d: trained numbers")
    p.add_argument("--levels", type=int, default=defaults.levels, help="quantization levels for z")
    p.add_argument("--samples", type=int, default=defaults.samples, help="blocks sampled for the bound")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def run(args) -> int:
    out = Path(args.out) if args.out else Path("runs") / time.strftime("quickstart-%Y%m%d-%H%M%S")
    if holds_something(out):
        raise UserError(f"{out} exists and is not empty; choose a new --out")
    check_writable(args.json, args.force)
    for name in ("steps", "subspace_dim", "levels", "samples"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    chosen = {f.name: getattr(args, f.name) for f in fields(QuickstartConfig) if hasattr(args, f.name)}
    report = run_quickstart(out, QuickstartConfig(**chosen), progress=not args.no_progress)
    print(format_bound_table(report))
    write_json(out / "report.json", report)
    (out / "report.md").write_text(format_markdown(report, "tokenbounds quickstart"))
    if args.json:
        write_json(args.json, report)
    print(f"reports: {out / 'report.json'}, {out / 'report.md'}")
    return 0
