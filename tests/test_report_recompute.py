"""Every row of a real `bound` report, recomputed independently of tokenbounds.stats.bound.

The closed-form terms come from the report's own fields (m, s, the delta split, the prior, the lambda grid, the
loss range of each alpha) with the formulas written out here; the subsampling terms come from calling the UCB on
the per-unit values `bound --units-out` wrote beside the report. Lotfi and eb, token, block and exhaustive.
"""

import json
import math

import numpy as np
import pytest

from tokenbounds.stats.subsample import get_ucb

from .test_cli_bound import one_line_error, run_cli

TOL = 1e-9

CONFIGS = {
    "lotfi-token-hoeffding": ["--paper", "--extra-bits", "2"],
    "lotfi-block-betting": ["--method", "lotfi", "--mode", "block", "--stride", "16"],
    "lotfi-exhaustive": ["--method", "lotfi", "--mode", "exhaustive"],
    "eb-token-maurer-pontil": ["--mode", "token", "--subsample-ucb", "maurer-pontil"],
    "eb-block-betting": ["--extra-bits", "1"],  # the defaults
    "eb-exhaustive": ["--mode", "exhaustive", "--rule", "block"],
}


def bound_args(model, data, out, *extra):
    args = ["bound", "--model", str(model), "--data", str(data), "--message-bits", "300", "--context", "32"]
    return [*args, "--samples", "150", "--no-progress", "--json", str(out), *extra]


def psi(lam):
    return -math.log(1.0 - lam) - lam


def expected_split(report: dict) -> tuple[float, float]:
    """(delta1, delta2) per statistic: delta over n statistics; when sampled, the report's martingale share of each
    (checked against an independent minimisation of the proxy below) and delta2 over 2**(bits of choices that could
    have seen the data)."""
    n = len(report["results"])
    sampled = report["samples"] is not None
    share = report["delta_split"]["martingale_share"] if sampled else 1.0
    delta1 = report["delta"] / n * share
    bits = report["prior"].get("data_choice_bits", 0.0)
    delta2 = report["delta"] / n * (1 - share) / 2.0**bits if sampled else 0.0
    return delta1, delta2


def proxy_minimising_share(report: dict, nats: float) -> float:
    """The share minimising Azuma + Hoeffding, sqrt((C + ln(N/d1))/2m) + sqrt(ln(N/d2)/2s), by scipy."""
    from scipy.optimize import minimize_scalar

    d, m, s = report["delta"] / len(report["results"]), report["n_tokens"], report["samples"]
    n_points = len(report["lambdas"]) + 1 if report["method"] == "eb" else 1

    def proxy(z):
        share = 1 / (1 + math.exp(-z))
        return math.sqrt((nats + math.log(n_points / (d * share))) / (2 * m)) + math.sqrt(
            math.log(n_points / (d * (1 - share))) / (2 * s)
        )

    z = minimize_scalar(proxy, bounds=(-30, 30), method="bounded", options={"xatol": 1e-10}).x
    return 1 / (1 + math.exp(-z))


def complexity(report: dict) -> float:
    """log 1/P(h) in nats: ceil(C) + 2 log2 ceil(C) + log2(pi^2/6) + extra bits, times ln 2."""
    c = math.ceil(report["message_bits"])
    return (c + 2 * math.log2(c) + math.log2(math.pi**2 / 6) + report["extra_bits"]) * math.log(2)


def recompute_row(report: dict, row: dict, loss: np.ndarray | None, sq: np.ndarray | None) -> dict:
    vocab, m = report["vocab_size"], report["n_tokens"]
    nats = complexity(report)
    delta1, delta2 = expected_split(report)
    if row["statistic"] == "bits_per_token":
        alpha = row["alpha"]
        a = -math.log2(1 - alpha + alpha / vocab)
        width = math.log2(vocab / alpha) - a
    else:
        a, width = 0.0, 1.0
    sampled = loss is not None
    out = {"loss_min": a, "loss_range": width}
    if report["method"] == "lotfi":
        out["empirical"] = float(loss.mean()) if sampled else row["empirical"]
        out["complexity_term"] = width * math.sqrt((nats + math.log(1 / delta1)) / (2 * m))
        out["variance_term"] = 0.0
        if not sampled:
            out["subsampling_term"] = 0.0
        elif report["subsample_ucb"] == "hoeffding":  # Hoeffding, by hand: mean + slack, capped at a + Delta
            ucb = min(out["empirical"] + width * math.sqrt(math.log(1 / delta2) / (2 * len(loss))), a + width)
            out["subsampling_term"] = ucb - out["empirical"]
        else:
            ucb = get_ucb(report["subsample_ucb"])(loss, a, a + width, delta2)
            out["subsampling_term"] = float(ucb) - out["empirical"]
    else:
        grid = report["lambdas"]
        n_points = len(grid) + 1  # the grid and the Azuma point
        log_term = nats + math.log(n_points / delta1)  # L = C + ln(N / delta1)
        empirical = float(loss.mean()) if sampled else row["empirical"]
        mean_sq = float(sq.mean()) if sampled else row["mean_sq"]
        ucb = get_ucb(report["subsample_ucb"]) if sampled else None
        candidates = []  # (bound, lambda or None, complexity term, variance term, UCB of the candidate's mean)
        for lam in grid:
            r = psi(lam) / lam
            if sampled:  # Z = l + Delta (psi/lambda) sq in [a, a + Delta (1 + psi/lambda)], UCB at delta2/N
                z_ucb = float(ucb(loss + width * r * sq, a, a + width * (1 + r), delta2 / n_points))
            else:
                z_ucb = empirical + width * r * mean_sq
            term = width * log_term / (lam * m)
            candidates.append((z_ucb + term, lam, term, width * r * mean_sq, z_ucb))
        # The Azuma point: lotfi's bound inside the union, at delta1/N and delta2/N.
        loss_ucb = float(ucb(loss, a, a + width, delta2 / n_points)) if sampled else empirical
        azuma = width * math.sqrt(log_term / (2 * m))
        candidates.append((loss_ucb + azuma, None, azuma, 0.0, loss_ucb))
        _, lam, term, variance, best_ucb = min(candidates, key=lambda c: c[0])
        out.update(empirical=empirical, mean_sq=mean_sq, complexity_term=term, variance_term=variance)
        out.update({"lambda": lam, "point": "azuma" if lam is None else "lambda"})
        out["subsampling_term"] = best_ucb - empirical - variance
    total = out["empirical"] + out["complexity_term"] + out["variance_term"] + out["subsampling_term"]
    out["bound"] = min(total, a + width)  # no loss exceeds a + Delta, so neither can R
    out["clipped"] = total > a + width
    if sampled:
        out["unit_std"] = float(np.std(loss))
    return out


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_row_recomputed(tiny_gpt2, tiny_corpus, tmp_path, capsys, name):
    out, units_out = tmp_path / "r.json", tmp_path / "units.npz"
    sampled = "exhaustive" not in name
    extra = [*CONFIGS[name], *(["--units-out", str(units_out)] if sampled else [])]
    code, _, err = run_cli(bound_args(tiny_gpt2, tiny_corpus, out, *extra), capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    method, mode = name.split("-")[:2]
    assert (report["method"], report["mode"]) == (method, mode)
    delta1, delta2 = expected_split(report)
    if report["samples"] is not None:
        assert report["delta_split"]["martingale_share"] == pytest.approx(
            proxy_minimising_share(report, complexity(report)), abs=1e-6
        )
    assert report["delta_split"]["martingale_per_statistic"] == pytest.approx(delta1, rel=1e-12)
    assert report["delta_split"]["subsampling_per_statistic"] == pytest.approx(delta2, rel=1e-12)
    assert report["random_stream"]["purpose"] == "bound/units"
    units = np.load(units_out) if sampled else None
    if sampled:
        assert units["unit_loss"].shape == (len(report["results"]), report["samples"])
        assert ("unit_sq" in units) == (method == "eb")
        assert len(units["draws"]) == report["samples"]
    for j, row in enumerate(report["results"]):
        label = f"alpha={row['alpha']!r}" if "alpha" in row else f"k={row['k']}"
        loss = sq = None
        if sampled:
            assert units["statistics"][j] == label
            loss = units["unit_loss"][j]
            sq = units["unit_sq"][j] if method == "eb" else None
        for key, value in recompute_row(report, row, loss, sq).items():
            if value is None or isinstance(value, bool | str):
                assert row[key] == value, (name, label, key)
            else:
                assert row[key] == pytest.approx(value, rel=TOL, abs=TOL), (name, label, key)


def test_units_out_is_never_overwritten_and_needs_sampled_units(tiny_gpt2, tiny_corpus, tmp_path, capsys):
    existing = tmp_path / "units.npz"
    existing.write_text("keep me")
    code, _, err = run_cli(
        bound_args(tiny_gpt2, tiny_corpus, tmp_path / "a.json", "--units-out", str(existing)), capsys
    )
    one_line_error(code, err, "already exists")
    assert existing.read_text() == "keep me"
    args = bound_args(tiny_gpt2, tiny_corpus, tmp_path / "b.json", "--mode", "exhaustive", "--units-out", "u.npz")
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, "--units-out")


@pytest.mark.parametrize(
    "flags", [["--method", "eb"], ["--mode", "block"], ["--subsample-ucb", "betting"]], ids=lambda f: f[0]
)
def test_paper_refuses_a_contradicting_flag(tiny_gpt2, tiny_corpus, tmp_path, capsys, flags):
    code, _, err = run_cli(bound_args(tiny_gpt2, tiny_corpus, tmp_path / "r.json", "--paper", *flags), capsys)
    one_line_error(code, err, "--paper", flags[0])


def test_data_choice_bits_divide_delta2(tiny_gpt2, tiny_corpus, tmp_path, capsys):
    """--extra-bits (a choice that could have seen the subsample) divides every statistic's delta2 by 2**bits."""
    out, units_out = tmp_path / "r.json", tmp_path / "u.npz"
    args = bound_args(tiny_gpt2, tiny_corpus, out, "--extra-bits", "3", "--units-out", str(units_out))
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    n, share = len(report["results"]), report["delta_split"]["martingale_share"]
    assert report["prior"]["data_choice_bits"] == 3.0
    assert report["delta_split"]["subsampling_per_statistic"] == pytest.approx(0.05 / n * (1 - share) / 8, rel=1e-12)
    assert report["delta_split"]["subsampling_divided_by"] == 8.0
    units = np.load(units_out)
    for j, row in enumerate(report["results"]):
        for key, value in recompute_row(report, row, units["unit_loss"][j], units["unit_sq"][j]).items():
            if value is None or isinstance(value, bool | str):
                assert row[key] == value, (row, key)
            else:
                assert row[key] == pytest.approx(value, rel=TOL, abs=TOL), (row, key)
