"""Widths of the tightening changes of issue 9 item 6, before and after side by side, in one run.

    python scripts/bench_tightness.py                      # all sections, 400 simulated corpora per setting
    python scripts/bench_tightness.py --sections betting --reps 100
    PYTHONPATH=/path/to/confseq python scripts/bench_tightness.py --sections betting   # + confseq cross-check

Sections:
  betting    the betting UCB: final capital vs the running intersection (max over t <= n of one process), and
             the truncation c in {0.5, 0.75, 0.9, 0.95}, on synthetic unit values: low-variance block means
             (sd 0.2-0.5 bits on ranges of 8-20 bits, s = 500-4000) and high-variance draws (Bernoulli, Beta,
             token-like Gamma). Mean width = mean over repetitions of UCB - sample mean, on the [0, 1] scale.
             With confseq importable, its `betting_mart` (an independent implementation) is run with the
             same bets and inverted on a grid, final capital vs running maximum.
  eb-lotfi   exhaustive bounds (excess over R_hat in units of Delta) over L/m from 1e-3 to 10: eb without the
             Azuma point on the old 20-point grid, eb with it on the new grid, and the paper's bound.
  grid       worst rounding cost of the old and the new default lambda grid against a continuous minimum.
  split      the proxy bound at the fixed 1/2 split and at the chosen split, across scales.
  coverage   the coverage simulation's settings (tokenbounds.coverage.settings.SETTINGS, the same corpora as
             scripts/coverage_sim.py for a given seed, but memorise-V50's predictor does not memorise here): violation
             rate against the binomial allowance and mean excess (bound - estimate) for each change added one at a
             time.

Nothing here is a choice made on a real corpus: the constants were fixed from these synthetic studies.
"""

import argparse
import functools
import math
import sys
import time

import numpy as np

from tokenbounds.coverage.harness import draw_units, setting_source, unit_values
from tokenbounds.coverage.settings import SETTINGS, block_layout
from tokenbounds.coverage.sources import loss_tables, sample_paths, topk_tables
from tokenbounds.coverage.table import binomial_allowance
from tokenbounds.stats.bound import statistic_bound
from tokenbounds.stats.eb import eb_bounds_batch, eb_exhaustive_batch, psi
from tokenbounds.stats.lambda_grid import default_lambda_grid
from tokenbounds.stats.split import choose_martingale_share
from tokenbounds.stats.subsample import UCBS, betting_bets, betting_ucb

OLD_TRUNCATION = 0.75
TRUNCATIONS = (0.5, 0.75, 0.9, 0.95)
OLD_GRID = np.geomspace(1e-4, 0.9, 20)  # the default grid before this change

# betting variants registered under extra names so that eb_bounds_batch can use them (this process only)
UCBS["betting-final-0.75"] = functools.partial(betting_ucb, truncation=OLD_TRUNCATION, running_max=False)
UCBS["betting-run-0.75"] = functools.partial(betting_ucb, truncation=OLD_TRUNCATION, running_max=True)


# ---------------------------------------------------------------- betting


def _synthetic_cases(rng: np.random.Generator, reps: int):
    """(label, draws on [0, 1] of shape (reps, n)) for the low- and high-variance families."""
    for sd, width, mean, ns in (
        (0.2, 20.0, 4.0, (500, 1000, 4000)),
        (0.2, 8.0, 4.0, (500, 4000)),
        (0.5, 12.0, 3.0, (500, 2000)),
    ):
        for n in ns:
            x = np.clip(mean + sd * rng.standard_normal((reps, n)), 0.0, width) / width
            yield f"block sd {sd} bits / {width:g} bits", n, x
    for p in (0.02, 0.1, 0.5):
        for n in (60, 500, 2000):
            yield f"Bernoulli({p})", n, (rng.random((reps, n)) < p).astype(float)
    for n in (60, 500, 2000):
        yield "Beta(2, 8)", n, rng.beta(2.0, 8.0, size=(reps, n))
        yield "token Gamma(3, 1.3) / 20", n, np.clip(rng.gamma(3.0, 1.3, size=(reps, n)), 0, 20) / 20


def _confseq_widths(x: np.ndarray, delta: float, c: float, breaks: int = 2000):
    """(final, running) mean widths from confseq's betting_mart with our bets, inverted on a grid of m."""
    from confseq.betting import betting_mart  # noqa: PLC0415 (optional, for the cross-check only)

    grid = np.linspace(0.0, 1.0, breaks + 1)
    final_w, run_w = [], []
    for row in x:
        bets = betting_bets(row, delta)
        caps = np.array(
            [
                betting_mart(row, m, alpha=delta, lambdas_fn_positive=lambda _x, _m, b=bets: b, theta=0, trunc_scale=c)
                for m in grid
            ]
        )  # (breaks + 1, n): K_t(m) for every grid m
        for store, stat in ((final_w, caps[:, -1]), (run_w, caps.max(axis=1))):
            rejected = stat >= 1.0 / delta
            u = grid[np.argmax(rejected)] if rejected.any() else 1.0
            store.append(u - row.mean())
    return float(np.mean(final_w)), float(np.mean(run_w))


def section_betting(reps: int, delta: float, seed: int) -> None:
    try:
        import confseq.betting  # noqa: F401, PLC0415

        have_confseq = True
    except ImportError:
        have_confseq = False
    print(f"\n== betting UCB: mean width (UCB - mean, [0, 1] scale), delta = {delta}, {reps} repetitions")
    head = f"{'draws':<28} {'n':>5} {'final c=.75':>11} {'run c=.75':>10} {'run/final':>9}"
    head += "".join(f" {'run c=' + str(c):>11}" for c in TRUNCATIONS if c != OLD_TRUNCATION)
    head += " c=.9/c=.75 c=.95/c=.75"
    if have_confseq:
        head += "  confseq final  run  run/final"
    print(head)
    rng = np.random.default_rng(seed)
    for label, n, x in _synthetic_cases(rng, reps):
        mean = x.mean(axis=1)
        final = float(np.mean(betting_ucb(x, 0, 1, delta, truncation=OLD_TRUNCATION, running_max=False) - mean))
        run = {c: float(np.mean(betting_ucb(x, 0, 1, delta, truncation=c) - mean)) for c in TRUNCATIONS}
        line = f"{label:<28} {n:>5} {final:>11.5f} {run[0.75]:>10.5f} {run[0.75] / final:>9.3f}"
        line += "".join(f" {run[c]:>11.5f}" for c in TRUNCATIONS if c != OLD_TRUNCATION)
        line += f" {run[0.9] / run[0.75]:>10.3f} {run[0.95] / run[0.75]:>11.3f}"
        if have_confseq and n <= 2000:
            cf, cr = _confseq_widths(x[: min(reps, 20)], delta, OLD_TRUNCATION)
            line += f"  {cf:>13.5f} {cr:>5.5f} {cr / cf:>8.3f}"
        print(line, flush=True)
    if not have_confseq:
        print("(confseq not importable: the independent cross-check was skipped)")


# ---------------------------------------------------------------- eb vs lotfi, grid, split


def _eb_exhaustive_excess(l_over_m: float, v: float, grid, azuma: bool) -> float:
    """min over the candidates of the excess over R_hat, in units of Delta, given L/m (the union inside L)."""
    best = float(np.min(l_over_m / grid + psi(grid) / grid * v))
    return min(best, math.sqrt(l_over_m / 2)) if azuma else best


def section_eb_lotfi() -> None:
    m, delta1 = 10**6, 0.01
    print("\n== eb vs the paper's bound, exhaustive: excess over R_hat in units of Delta")
    print("   L = C + ln(N/delta1) for each method's own N (old eb: 20, new eb: 43, lotfi: 1); C from L/m of lotfi")
    print(
        f"{'C/m':>8} {'v':>5} {'lotfi':>9} {'old eb':>9} {'new eb':>9} {'new point':>9} "
        f"{'old/lotfi':>9} {'new/lotfi':>9}"
    )
    new_grid = default_lambda_grid()
    for v in (0.01, 0.1):
        for c_over_m in np.geomspace(1e-3, 10.0, 9):
            complexity = c_over_m * m
            lotfi = math.sqrt((complexity + math.log(1 / delta1)) / (2 * m))
            old_l = (complexity + math.log(OLD_GRID.size / delta1)) / m
            new_l = (complexity + math.log((new_grid.size + 1) / delta1)) / m
            old = _eb_exhaustive_excess(old_l, v, OLD_GRID, False)
            new = _eb_exhaustive_excess(new_l, v, new_grid, True)
            lam_part = _eb_exhaustive_excess(new_l, v, new_grid, False)
            point = "azuma" if new < lam_part else "lambda"
            print(
                f"{c_over_m:>8.3g} {v:>5.2f} {lotfi:>9.5f} {old:>9.5f} {new:>9.5f} {point:>9} "
                f"{old / lotfi:>9.3f} {new / lotfi:>9.3f}"
            )


def _rounding_cost(grid, big_a, big_b) -> float:
    from scipy.optimize import minimize_scalar  # noqa: PLC0415

    def f(lam):
        return big_a / lam + big_b * psi(lam) / lam

    res = minimize_scalar(
        lambda u: f(math.exp(u)),
        bounds=(math.log(grid[0]), math.log(grid[-1])),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return float(np.min(f(np.asarray(grid)))) / min(float(res.fun), f(grid[0]), f(grid[-1])) - 1.0


def section_grid() -> None:
    print("\n== lambda grid: worst rounding cost (grid minimum / continuous minimum - 1) over lambda* in [1e-4, 0.89]")
    cases = []
    for lam_star in np.geomspace(1.05e-4, 0.89, 200):
        cases.append(lam_star**2 / (1 - lam_star) - float(psi(lam_star)))
    for name, grid in (
        ("old: 20 geometric", OLD_GRID),
        ("34 geometric (ratio 1.32)", np.geomspace(1e-4, 0.9, 34)),
        ("new: default (logit)", default_lambda_grid()),
    ):
        costs = np.array([_rounding_cost(grid, a_, 1.0) for a_ in cases])
        lam_at = np.geomspace(1.05e-4, 0.89, 200)[int(np.argmax(costs))]
        costs_small = costs[np.geomspace(1.05e-4, 0.89, 200) < 0.05]
        print(
            f"{name:<28} points {grid.size:>3}  worst {costs.max():.4f} (at lambda* {lam_at:.3f})  "
            f"worst for lambda* < 0.05 {costs_small.max():.4f}  mean {costs.mean():.4f}  "
            f"ln N {math.log(grid.size):.2f} nats"
        )


def section_grid_at_scale() -> None:
    print("\n== old (20 geometric) vs new (42 logit) default grid, exhaustive eb with the Azuma point, delta1 = 0.01:")
    print("   excess over R_hat in units of Delta; the new grid pays ln(43/21) = 0.72 nats more in L")
    print(f"{'C (nats)':>9} {'m':>8} {'v':>6} {'old grid':>10} {'new grid':>10} {'new/old':>8}")
    new_grid = default_lambda_grid()
    for complexity, m in ((0.0, 2000), (0.0, 10**4), (1e2, 10**6), (1e4, 10**8), (1e5, 10**9), (1e7, 10**10)):
        for v in (0.003, 0.03, 0.3):
            old_l = (complexity + math.log((OLD_GRID.size + 1) / 0.01)) / m
            new_l = (complexity + math.log((new_grid.size + 1) / 0.01)) / m
            old = _eb_exhaustive_excess(old_l, v, OLD_GRID, True)
            new = _eb_exhaustive_excess(new_l, v, new_grid, True)
            print(f"{complexity:>9.3g} {m:>8.1e} {v:>6.3f} {old:>10.6f} {new:>10.6f} {new / old:>8.3f}")


def section_split() -> None:
    print("\n== delta split: proxy Delta sqrt((C + ln N/d1)/(2m)) + Delta sqrt(ln(N/d2)/(2s)), units of Delta")
    print(
        f"{'C (nats)':>9} {'m':>8} {'s':>5} {'N':>3} {'stats':>5} {'share':>8} "
        f"{'proxy 1/2':>10} {'chosen':>10} {'gain':>7}"
    )
    for complexity, m, s, n_points, n_stats in (
        (0.0, 2000, 200, 9, 1),
        (0.0, 4000, 100, 9, 2),
        (0.0, 10**4, 200, 9, 2),
        (1e3, 10**6, 500, 43, 8),
        (1e5, 10**9, 2000, 43, 8),
        (1e6, 10**9, 2000, 43, 8),
        (3e7, 10**10, 4000, 43, 8),
    ):
        ch = choose_martingale_share(0.05, n_stats, complexity_nats=complexity, m=m, s=s, n_points=n_points)
        print(
            f"{complexity:>9.3g} {m:>8.1e} {s:>5d} {n_points:>3d} {n_stats:>5d} {ch.martingale_share:>8.4f} "
            f"{ch.proxy_half:>10.5f} {ch.proxy:>10.5f} {1 - ch.proxy / ch.proxy_half:>7.2%}"
        )


# ---------------------------------------------------------------- the coverage simulation

# each change added one at a time: (name, betting UCB name, azuma, split, grid)
VARIANTS = (
    ("old", "betting-final-0.75", False, "half", "setting"),
    ("+running max", "betting-run-0.75", False, "half", "setting"),
    ("+c=0.9", "betting", False, "half", "setting"),
    ("+azuma point", "betting", True, "half", "setting"),
    ("+chosen split", "betting", True, "chosen", "setting"),
    ("old default grid", "betting", True, "chosen", "old-default"),
    ("+default grid", "betting", True, "chosen", "default"),
)
GRIDS = {"old-default": OLD_GRID}


def _split(variant_split, s, n_stats, n_points, exhaustive):
    if exhaustive:
        return s.delta / n_stats, 0.0
    if variant_split == "half":
        return s.delta / (2 * n_stats), s.delta / (2 * n_stats)
    ch = choose_martingale_share(
        s.delta, n_stats, complexity_nats=s.complexity_nats, m=s.m, s=s.samples, n_points=n_points
    )
    return ch.delta1, ch.delta2


def _bounds_for(method, variant, units_loss, units_sq, token_loss, token_sq, t, s, n_stats):
    """Bound of shape (trials,) for one method ("lotfi/block", "eb/token", "eb/block", "eb/exhaustive")."""
    _, ucb, azuma, split, grid_name = variant
    family, unit = method.split("/")
    grid = np.asarray(s.lambdas) if grid_name == "setting" else GRIDS.get(grid_name, default_lambda_grid())
    n_points = 1 if family == "lotfi" else grid.size + (1 if azuma else 0)
    d1, d2 = _split(split, s, n_stats, n_points, unit == "exhaustive")
    common = dict(a=t.a, delta_range=t.delta_range, complexity_nats=s.complexity_nats, m=s.m, delta1=d1)
    if family == "lotfi":  # the shipped function, unclipped: the excess is compared across variants
        return statistic_bound("lotfi", units_loss[unit], delta2=d2, ucb=ucb, **common).unclipped
    if unit == "exhaustive":
        mean_loss, mean_sq = token_loss.mean(axis=1), token_sq.mean(axis=1)
        return eb_exhaustive_batch(mean_loss, mean_sq, lambdas=grid, azuma=azuma, **common)[0]
    return eb_bounds_batch(units_loss[unit], units_sq[unit], lambdas=grid, delta2=d2, ucb=ucb, azuma=azuma, **common)[0]


COVERAGE_METHODS = ("lotfi/block", "eb/exhaustive", "eb/token", "eb/block", "eb-topk/token")


def _applies(method: str, variant) -> bool:
    """Only the variants that change something for the method (lotfi: betting and split; exhaustive: eb's)."""
    name = variant[0]
    if method.startswith("lotfi"):
        return name in ("old", "+running max", "+c=0.9", "+chosen split")
    if method.endswith("exhaustive"):
        return name in ("old", "+azuma point", "old default grid", "+default grid")
    return True


def section_coverage(trials: int, seed: int, settings, chunk: int = 100) -> None:
    print(f"\n== coverage simulation: {trials} corpora per setting (seed {seed}); mean excess = bound - estimate")
    print(
        f"{'setting':<17} {'method':<14} {'variant':<15} {'viol.':>6} {'rate':>7} {'allowed':>7} "
        f"{'excess':>9} {'vs old':>7}"
    )
    for name in settings:
        s = SETTINGS[name]
        chain, model = setting_source(s)  # as in harness.run_setting: the same source and predictor
        tables = {("loss", alpha): loss_tables(chain, model, alpha) for alpha in s.alphas}
        tables[("topk", s.topk)] = topk_tables(chain, model, s.topk)
        rng = np.random.default_rng([seed, s.seed])
        starts, lengths = block_layout(s)
        keys = [(meth, v[0]) for meth in COVERAGE_METHODS for v in VARIANTS if _applies(meth, v)]
        viol = {k: 0 for k in keys}
        excess = {k: [] for k in keys}
        done = 0
        while done < trials:
            c = min(chunk, trials - done)
            states, tokens = sample_paths(chain, c, s.m, rng)
            token_idx, block_idx = draw_units(s, rng, c, starts, lengths)
            per = {k: ([], []) for k in keys}
            for (kind, _), t in tables.items():
                token_loss = t.loss[states, tokens]
                risk = t.expected_loss[states].mean(axis=1)
                token_sq = ((t.centring[states] - token_loss) / t.delta_range) ** 2
                units_loss = unit_values(token_loss, token_idx, block_idx, starts, lengths)
                units_sq = unit_values(token_sq, token_idx, block_idx, starts, lengths)
                n_stats = len(s.alphas) if kind == "loss" else 1
                for meth, vname in keys:
                    if meth.startswith("eb-topk") != (kind == "topk"):
                        continue
                    variant = next(v for v in VARIANTS if v[0] == vname)
                    m_for = meth.replace("eb-topk", "eb")
                    bound = _bounds_for(m_for, variant, units_loss, units_sq, token_loss, token_sq, t, s, n_stats)
                    est = (
                        token_loss.mean(axis=1)
                        if m_for.endswith("exhaustive")
                        else units_loss[m_for.split("/")[1]].mean(axis=1)
                    )
                    per[(meth, vname)][0].append(risk > bound)
                    per[(meth, vname)][1].append(bound - est)
            for k, (violated, exc) in per.items():
                viol[k] += int(np.sum(np.any(np.stack(violated), axis=0)))
                excess[k].append(np.mean(np.stack(exc), axis=0))
            done += c
        allowed = binomial_allowance(s.delta, trials)
        for meth in COVERAGE_METHODS:
            old = float(np.mean(np.concatenate(excess[(meth, "old")])))
            for v in VARIANTS:
                if not _applies(meth, v):
                    continue
                k = (meth, v[0])
                rate = viol[k] / trials
                exc = float(np.mean(np.concatenate(excess[k])))
                flag = "" if rate <= allowed else "  VIOLATED"
                print(
                    f"{name:<17} {meth:<14} {v[0]:<15} {viol[k]:>6d} {rate:>7.4f} {allowed:>7.3f} {exc:>9.4f} "
                    f"{exc / old - 1:>+7.1%}{flag}",
                    flush=True,
                )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    all_sections = ("betting", "eb-lotfi", "grid", "split", "coverage")
    parser.add_argument("--sections", nargs="+", default=list(all_sections), choices=all_sections)
    parser.add_argument("--reps", type=int, default=50, help="repetitions per synthetic betting case (default 50)")
    parser.add_argument("--delta", type=float, default=0.01, help="delta of the synthetic betting UCBs (0.01)")
    parser.add_argument("--trials", type=int, default=400, help="simulated corpora per coverage setting (400)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if "betting" in args.sections:
        section_betting(args.reps, args.delta, args.seed)
    if "eb-lotfi" in args.sections:
        section_eb_lotfi()
    if "grid" in args.sections:
        section_grid()
        section_grid_at_scale()
    if "split" in args.sections:
        section_split()
    if "coverage" in args.sections:
        section_coverage(args.trials, args.seed, args.settings)
    print(f"\n{time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
