"""`bound --target-slack`: rounds fixed in advance, the anytime-valid UCB, the stopping rule, and its coverage."""

import json

import numpy as np
import pytest

from tokenbounds.cli import main
from tokenbounds.coverage.stopping import SETTINGS, run_stopping_setting
from tokenbounds.stats.bound import statistic_bound
from tokenbounds.stats.stopping import round_schedule, sample_until
from tokenbounds.stats.subsample import betting_ucb, get_ucb


def test_rounds_double_up_to_the_horizon():
    assert round_schedule(1000) == [64, 128, 256, 512, 1000]
    assert round_schedule(50) == [50]
    assert round_schedule(10, first=2, growth=1.25) == [2, 3, 4, 5, 6, 7, 8, 10]  # at least one more each round
    with pytest.raises(ValueError):
        round_schedule(10, growth=1.0)


def test_sampling_stops_at_the_first_round_that_meets_the_target():
    looked = []

    def slack(t):
        looked.append(t)
        return 1.0 / t

    assert sample_until(slack, [10, 20, 40, 80], 0.04) == (40, [0.1, 0.05, 0.025])
    assert looked == [10, 20, 40]  # nothing scored past the stopping round
    assert sample_until(lambda t: 1.0, [10, 20], 0.5) == (20, [1.0, 1.0])  # the horizon is the last stop
    with pytest.raises(ValueError):
        sample_until(slack, [10], 0.0)


def test_the_anytime_ucb_is_the_betting_ucb_with_bets_fixed_for_the_horizon():
    x = np.random.default_rng(0).beta(1, 5, 300)
    assert get_ucb("betting", 300)(x, 0, 1, 0.05) == betting_ucb(x, 0, 1, 0.05)  # horizon = n: the fixed-n bound
    # Bets tuned for a longer horizon are smaller early on: a different (valid) process, not the fixed-n one.
    assert get_ucb("betting", 3000)(x, 0, 1, 0.05) != betting_ucb(x, 0, 1, 0.05)
    with pytest.raises(ValueError, match="shorter"):
        get_ucb("betting", 100)(x, 0, 1, 0.05)
    for fixed_n in ("hoeffding", "maurer-pontil"):
        with pytest.raises(ValueError, match="fixed-n"):
            get_ucb(fixed_n, 300)


def test_stopping_on_the_data_keeps_coverage_and_re_tuned_bets_are_caught():
    """The shipped bound misses at most delta (plus the binomial allowance) even against the worst stopping rule;
    the fixed-n betting interval re-checked after every round misses more often than that."""
    setting = SETTINGS[0]
    methods = {"betting/anytime": ("betting", True), "betting/re-tuned": ("betting", False)}
    rows = {r["method"]: r for r in run_stopping_setting(setting, 400, methods)}
    shipped, broken = rows["betting/anytime"], rows["betting/re-tuned"]
    assert shipped["miss_rate_adversary"] <= shipped["allowance"]
    assert shipped["miss_rate_target_slack"] <= shipped["allowance"]
    assert broken["miss_rate_adversary"] > broken["allowance"], broken


@pytest.fixture(scope="module")
def block_run(tiny_gpt2, tiny_corpus, tmp_path_factory):
    """A sampled block-mode run: the arguments every test below extends."""
    out = tmp_path_factory.mktemp("slack")
    base = ["bound", "--model", str(tiny_gpt2), "--data", str(tiny_corpus), "--context", "32", "--samples", "600"]
    return base + ["--message-bits", "1000", "--no-progress"], out


def run(args, out, name):
    path = out / f"{name}.json"
    assert main([*args, "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_a_loose_target_stops_after_the_first_round_and_says_so(block_run, one_torch_thread):
    args, out = block_run
    report = run([*args, "--target-slack", "50", "--units-out", str(out / "u.npz")], out, "loose")
    stop = report["target_slack"]
    assert report["samples"] == 64 and stop["used"] == 64 and stop["stopped"] == "target met"
    assert stop["horizon"] == 600 and [r["draws"] for r in stop["rounds"]] == [64]
    assert report["distinct_units"] <= 64
    # The rows are the shipped bound of the first 64 draws with the anytime UCB (horizon 600), and the delta split
    # is the one of a 600-draw run, fixed in advance.
    units = np.load(out / "u.npz")
    assert units["unit_loss"].shape[1] == 64
    row = report["results"][0]
    b = statistic_bound(
        "eb",
        units["unit_loss"][0],
        units["unit_sq"][0],
        a=row["loss_min"],
        delta_range=row["loss_range"],
        complexity_nats=report["complexity_nats"],
        m=report["n_tokens"],
        delta1=report["delta_split"]["martingale_per_statistic"],
        delta2=report["delta_split"]["subsampling_per_statistic"],
        ucb="betting",
        lambdas=np.asarray(report["lambdas"]),
        horizon=600,
    )
    assert row["bound"] == pytest.approx(float(b.bound), rel=1e-12)
    full = run(args, out, "full")
    assert full["delta_split"] == report["delta_split"]


def test_an_unreachable_target_uses_every_draw(block_run, one_torch_thread):
    args, out = block_run
    report = run([*args, "--target-slack", "1e-6"], out, "tight")
    stop = report["target_slack"]
    assert stop["stopped"] == "--samples reached" and report["samples"] == 600
    assert [r["draws"] for r in stop["rounds"]] == [64, 128, 256, 512, 600]
    slacks = [r["slack"] for r in stop["rounds"]]
    assert slacks[-1] < slacks[0]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--target-slack", "0"], "positive number of bits"),
        (["--target-slack", "nan"], "positive number of bits"),
        (["--target-slack", "0.1", "--subsample-ucb", "hoeffding"], "anytime-valid"),
        (["--target-slack", "0.1", "--paper"], "anytime-valid"),
        (["--target-slack", "0.1", "--mode", "exhaustive"], "sampled mode"),
        (["--target-slack", "0.1", "--unit", "document"], "not offered with --unit document"),
        (["--run-dir", "/nonexistent/run", "--unit", "sequence", "--stride", "32"], "not offered with --unit sequence"),
    ],
)
def test_bad_target_slack_is_refused_in_one_line(block_run, capsys, extra, message):
    args, _ = block_run
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
