"""Coverage of `bound --target-slack` under data-dependent stopping (a longer tests/test_target_slack.py).

    python scripts/coverage_stopping.py --trials 2000

For each setting of `tokenbounds.coverage.stopping.SETTINGS`: the miss rate of the subsampling UCB at the round the
pipeline's rule stops at (first round with slack <= EPS), and against the adversary (stop at the first round whose
UCB is below R_hat, if any), for the shipped anytime-valid betting UCB and the broken re-checked fixed-n intervals.
A valid method stays within the allowance (delta + 3 binomial sd) under both rules.
"""

import argparse
import json
import sys
import time

from tokenbounds.coverage.stopping import SETTINGS, run_stopping_setting


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=2000, help="seeded trials per setting (default 2000)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be >= 1")
    rows, start = [], time.perf_counter()
    header = ("setting", "method", "rounds", "delta", "miss@EPS", "miss@adv", "allowed")
    print("{:<15} {:<26} {:>6} {:>6} {:>9} {:>9} {:>8}  verdict".format(*header))
    for setting in SETTINGS:
        for r in run_stopping_setting(setting, args.trials):
            bad = max(r["miss_rate_target_slack"], r["miss_rate_adversary"]) > r["allowance"]
            verdict = ("caught" if bad else "NOT caught") if r["broken"] else ("VIOLATED" if bad else "holds")
            r["verdict"] = verdict
            rows.append(r)
            print(
                f"{r['setting']:<15} {r['method']:<26} {r['rounds']:>6} {r['delta']:>6} "
                f"{r['miss_rate_target_slack']:>9.4f} {r['miss_rate_adversary']:>9.4f} {r['allowance']:>8.4f}  "
                f"{verdict}",
                flush=True,
            )
    print(f"\n{args.trials} trials per setting, {time.perf_counter() - start:.0f} s in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"trials": args.trials, "results": rows}, f, indent=1)
    return 1 if any(r["verdict"] == "VIOLATED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
