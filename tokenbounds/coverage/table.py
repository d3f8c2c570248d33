"""The coverage study's verdicts: the binomial allowance a valid bound stays within, and the printed table."""

import math


def binomial_allowance(delta: float, trials: int) -> float:
    """Largest violation rate a valid bound shows by chance at 3 binomial standard deviations."""
    return delta + 3.0 * math.sqrt(delta * (1.0 - delta) / trials)


def format_table(results: list[dict]) -> str:
    """A readable table: one row per setting and method."""
    head = f"{'setting':<16} {'method':<34} {'delta':>5} {'viol.':>7} {'rate':>7} {'allowed':>7} "
    head += f"{'scale':>6} {'excess':>8}  verdict"
    lines = [head, "-" * len(head)]
    for res in results:
        s = res["setting"]
        for meth, r in res["methods"].items():
            ok = r["violation_rate"] <= r["allowed"]
            verdict = ("caught" if not ok else "not caught") if r["broken"] else ("ok" if ok else "VIOLATED")
            lines.append(
                f"{s['name']:<16} {meth:<34} {s['delta']:>5.2f} {r['violations']:>7d} "
                f"{r['violation_rate']:>7.4f} {r['allowed']:>7.3f} {r['scale']:>6.2f} "
                f"{r['mean_excess']:>8.4f}  {verdict}"
            )
    return "\n".join(lines)
