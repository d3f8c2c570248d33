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
    """(delta1, delta2) per statistic: delta over n statistics; half to each term when sampled; delta2 over
    2**(bits of choices that could have seen the data)."""
    n = len(report["results"])
    sampled = report["samples"] is not None
    delta1 = report["delta"] / n / (2 if sampled else 1)
    bits = report["prior"].get("data_choice_bits", 0.0)
    delta2 = report["delta"] / n / 2 / 2.0**bits if sampled else 0.0
    return delta1, delta2


def recompute_row(report: dict, row: dict, loss: np.ndarray | None, sq: np.ndarray | None) -> dict:
    vocab, m = report["vocab_size"], report["n_tokens"]
    nats = (report["message_bits"] + 2 * math.log2(report["message_bits"]) + report["extra_bits"]) * math.log(2)
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
        log_term = nats + math.log(len(grid) / delta1)  # L = C + ln(|Lambda| / delta1)
        empirical = float(loss.mean()) if sampled else row["empirical"]
        mean_sq = float(sq.mean()) if sampled else row["mean_sq"]
        candidates = []  # (bound at lambda, lambda, UCB of mean Z or its exact mean)
        for lam in grid:
            r = psi(lam) / lam
            if sampled:  # Z = l + Delta (psi/lambda) sq in [a, a + Delta (1 + psi/lambda)], UCB at delta2/|Lambda|
                z = loss + width * r * sq
                z_ucb = float(get_ucb(report["subsample_ucb"])(z, a, a + width * (1 + r), delta2 / len(grid)))
            else:
                z_ucb = empirical + width * r * mean_sq
            candidates.append((z_ucb + width * log_term / (lam * m), lam, z_ucb))
        _, lam, z_ucb = min(candidates)
        out.update(
            empirical=empirical,
            mean_sq=mean_sq,
            **{"lambda": lam},
            complexity_term=width * log_term / (lam * m),
            variance_term=width * psi(lam) / lam * mean_sq,
        )
        out["subsampling_term"] = z_ucb - empirical - out["variance_term"]
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
            if isinstance(value, bool):
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


def test_data_choice_bits_divide_delta2(tiny_gpt2, tiny_corpus, tmp_path, capsys, monkeypatch):
    """The prior's data_choice_bits (the integrator's _prior records them) reach the split and every row."""
    import tokenbounds.pipeline as pipeline

    original = pipeline._prior

    def prior_with_choices(req, manifest):
        bits, extra, info = original(req, manifest)
        return bits, extra, {**info, "data_choice_bits": req.extra_bits}

    monkeypatch.setattr(pipeline, "_prior", prior_with_choices)
    out, units_out = tmp_path / "r.json", tmp_path / "u.npz"
    args = bound_args(tiny_gpt2, tiny_corpus, out, "--extra-bits", "3", "--units-out", str(units_out))
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    n = len(report["results"])
    assert report["delta_split"]["subsampling_per_statistic"] == pytest.approx(0.05 / n / 2 / 8, rel=1e-12)
    assert report["delta_split"]["subsampling_divided_by"] == 8.0
    units = np.load(units_out)
    for j, row in enumerate(report["results"]):
        for key, value in recompute_row(report, row, units["unit_loss"][j], units["unit_sq"][j]).items():
            assert row[key] == pytest.approx(value, rel=TOL, abs=TOL), (row, key)
