"""What each change of the guarantee work did to one real bound: the best bits-per-token row of an eb report,
recomputed from its own per-unit values with the changes switched on one at a time.

    tokenbounds bound --model M --data D ... --json R.json --units-out U.npz
    python scripts/ablate_bound.py R.json U.npz

Rows, cumulative from the old configuration (20 geometric lambdas, no Azuma point, betting on the final capital
with c = 0.75, half of delta to each term, the length code without its normaliser, delta2 not divided for choices):
two validity fixes (they can only loosen the bound) and five tightenings (same guarantee). The last row must equal
the report's own best row: the script checks it.
"""

import argparse
import json
import math
import sys
from functools import partial

import numpy as np

from tokenbounds.stats import subsample
from tokenbounds.stats.bound import report_delta_split
from tokenbounds.stats.eb import eb_bounds_batch
from tokenbounds.stats.lambda_grid import default_lambda_grid
from tokenbounds.stats.prior import complexity_nats
from tokenbounds.stats.smoothing import loss_range

OLD_GRID = np.geomspace(1e-4, 0.9, 20)
STEPS = (
    ("before: the old configuration", {}),
    ("+ prefix code normaliser log2(pi^2/6) (validity)", {"normaliser": True}),
    ("+ delta2 / 2^extra_bits for choices that saw the data (validity)", {"choice_division": True}),
    ("+ lambda grid: 42 points uniform in logit", {"grid": True}),
    ("+ the Azuma point in eb's union", {"azuma": True}),
    ("+ betting: running intersection", {"running_max": True}),
    ("+ betting: truncation c = 0.9", {"truncation": True}),
    ("+ delta split chosen from C, m, s", {"split": True}),
)


def best_bound(report: dict, units, on: dict) -> float:
    """min over alpha of the eb bound with the changes in `on` switched on."""
    m, vocab, s = report["n_tokens"], report["vocab_size"], report["samples"]
    message, extra = report["message_bits"], report["extra_bits"]
    if on.get("normaliser"):
        nats = complexity_nats(message, extra)
    else:
        nats = (message + 2 * math.log2(message) + extra) * math.log(2)
    grid = default_lambda_grid() if on.get("grid") else OLD_GRID
    n_stats = len(report["results"])
    if on.get("split"):
        split = report_delta_split(report["delta"], n_stats, complexity_nats=nats, m=m, s=s, n_points=len(grid) + 1)
        delta1, delta2 = split.delta1, split.delta2
    else:
        delta1 = delta2 = report["delta"] / n_stats / 2
    if on.get("choice_division"):
        delta2 /= 2.0 ** report["prior"]["data_choice_bits"]
    name = "ablation-betting"  # the betting UCB with this step's options, under a name of its own
    subsample.UCBS[name] = partial(
        subsample.betting_ucb, truncation=0.9 if on.get("truncation") else 0.75, running_max=bool(on.get("running_max"))
    )
    bounds = []
    for j, row in enumerate(report["results"]):
        if row["statistic"] != "bits_per_token":
            continue
        a, width = loss_range(row["alpha"], vocab)
        bound, _, _ = eb_bounds_batch(
            units["unit_loss"][j],
            units["unit_sq"][j],
            a=a,
            delta_range=width,
            complexity_nats=nats,
            m=m,
            lambdas=grid,
            delta1=delta1,
            delta2=delta2,
            ucb=name,
            azuma=bool(on.get("azuma")),
        )
        bounds.append(min(float(bound), a + width))
    return min(bounds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="the JSON report of an eb bound with sampled units")
    parser.add_argument("units", help="its --units-out file")
    args = parser.parse_args(argv)
    report = json.loads(open(args.report).read())
    if report["method"] != "eb" or report["samples"] is None or report["subsample_ucb"] != "betting":
        print("ablate_bound.py: needs an eb report with sampled units and the betting UCB", file=sys.stderr)
        return 2
    units = np.load(args.units)
    on: dict = {}
    previous = None
    print(f"{'configuration':<66} {'bound':>8} {'change':>8}")
    for label, switch in STEPS:
        on.update(switch)
        value = best_bound(report, units, on)
        change = "" if previous is None else f"{value - previous:+.4f}"
        print(f"{label:<66} {value:>8.4f} {change:>8}")
        previous = value
    shipped = report["best_bits_per_token"]["bound"]
    print(f"the report's own best row: {shipped:.4f} bits/token")
    if abs(previous - shipped) > 1e-9:
        print("ablate_bound.py: the last row does not reproduce the report", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
