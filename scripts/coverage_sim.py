"""Coverage simulations of the token bounds on random Markov chains (a longer tests/test_coverage.py).

    python scripts/coverage_sim.py --trials 5000 --json coverage.json

For every setting of `tokenbounds.coverage.settings.SETTINGS` and every method, prints the violation rate of the
bound over seeded trials, the largest rate a valid bound shows by chance (delta + 3 binomial sd), the
"scale" ((1 - delta) quantile of (R - estimate) / (bound - estimate); <= 1 for a valid bound) and the mean
excess (bound - estimate, bits per token, or error rate for top-k). Broken variants must read "caught".
"""

import argparse
import json
import sys
import time

from tokenbounds.coverage.harness import BROKEN_METHODS, METHODS, run_setting
from tokenbounds.coverage.settings import SETTINGS
from tokenbounds.coverage.table import format_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=2000, help="seeded corpora per setting (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the trials (the sources are fixed)")
    parser.add_argument(
        "--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS), help="which settings to run"
    )
    parser.add_argument("--chunk", type=int, default=200, help="trials simulated at once (memory vs speed)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be >= 1")

    results = []
    start = time.perf_counter()
    for name in args.settings:
        t0 = time.perf_counter()
        res = run_setting(
            SETTINGS[name], args.trials, seed=args.seed, methods=METHODS + BROKEN_METHODS, chunk=args.chunk
        )
        res["seconds"] = time.perf_counter() - t0
        results.append(res)
        print(f"{name}: {args.trials} trials in {res['seconds']:.1f} s", file=sys.stderr, flush=True)
    print(format_table(results))
    print(f"\n{args.trials} trials per setting, seed {args.seed}, {time.perf_counter() - start:.0f} s in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"trials": args.trials, "seed": args.seed, "results": results}, f, indent=1)
    violated = [
        (res["setting"]["name"], meth)
        for res in results
        for meth, r in res["methods"].items()
        if not r["broken"] and r["violation_rate"] > r["allowed"]
    ]
    if violated:
        print(f"VIOLATED: {violated}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
