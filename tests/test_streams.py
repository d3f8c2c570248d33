"""Random streams: every purpose draws from its own stream of the seed, so a bound's units are independent of the
windows that produced the hypothesis (training, the trainer's evaluation, QAT), even when every step gets one seed.

The overlap test reproduces the bug it guards against: with `default_rng(seed)` everywhere (as before), `train --seed
0`, `quantize --seed 0` and `bound --seed 0` re-draw the same positions, so the units the bound scores lie in the
training windows far more often than the corpus' covered fraction (89 % against 33 % in the quickstart).
"""

import copy
import json

import numpy as np
import pytest
import torch

import tokenbounds.compress.qat as qat
import tokenbounds.data.windows as windows
import tokenbounds.train.trainer as trainer
from tokenbounds.compress.model import quantize_model
from tokenbounds.compress.quantized_dir import MANIFEST
from tokenbounds.data.shards import open_corpus
from tokenbounds.errors import UserError
from tokenbounds.models.gpt import GPTConfig
from tokenbounds.models.parametrization import make_spec
from tokenbounds.pipeline import BoundRequest, plan_units
from tokenbounds.streams import (
    BOUND_UNITS,
    PURPOSES,
    QAT_WINDOWS,
    TRAIN_EVAL,
    TRAIN_TORCH,
    TRAIN_WINDOWS,
    describe,
    stream,
    torch_seed,
)
from tokenbounds.train.trainer import TrainConfig, train

from .test_cli_bound import one_line_error, run_cli
from .test_train import write_shards

SEED = 0  # the quickstart's: one seed for train, quantize and bound
CONTEXT = 16
CFG = TrainConfig(steps=25, batch_size=8, grad_accum=5, warmup=2, eval_every=25, eval_batches=2, seed=SEED)
QAT = {"length": CONTEXT, "batch_size": 8, "lr": 1e-3, "seed": SEED}
QAT_STEPS = 10
SAMPLES = 1000  # <= the 1000 training windows: with one shared stream, every draw would re-draw a window
ALLOWANCE_SIGMAS = 4.5  # a binomial allowance: a correct implementation lands outside it with probability < 1e-5


def test_every_purpose_has_its_own_stream():
    for seed in (0, 1, 2**40):
        first = {p: stream(seed, p).integers(0, 2**62, size=4).tolist() for p in PURPOSES}
        first["default_rng"] = np.random.default_rng(seed).integers(0, 2**62, size=4).tolist()
        assert len({tuple(v) for v in first.values()}) == len(first)  # no two coincide, nor the old raw-seed stream
        assert stream(seed, BOUND_UNITS).integers(0, 2**62, size=4).tolist() == first[BOUND_UNITS]  # reproducible
    assert stream(0, BOUND_UNITS).random() != stream(1, BOUND_UNITS).random()
    assert len({torch_seed(s, TRAIN_TORCH) for s in range(50)}) == 50 and 0 <= torch_seed(3, TRAIN_TORCH) < 2**63


def test_describe_recreates_the_stream():
    record = json.loads(json.dumps(describe(7, QAT_WINDOWS)))  # as a report stores it
    assert record["seed"] == 7 and record["purpose"] == QAT_WINDOWS and record["generator"] == "PCG64"
    again = np.random.Generator(np.random.PCG64(np.random.SeedSequence(record["entropy"])))
    assert np.array_equal(again.integers(0, 10**9, 20), stream(7, QAT_WINDOWS).integers(0, 10**9, 20))


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3"])
def test_bad_seeds_are_user_errors(seed):
    with pytest.raises(UserError, match="--seed must be"):
        stream(seed, BOUND_UNITS)
    with pytest.raises(ValueError, match="unknown random-stream purpose"):  # a programming error, not user input
        stream(0, "bound")


def test_negative_seed_is_one_line_in_train_and_quantize(tmp_path, capsys):
    data = write_shards(tmp_path / "data", [500])
    code, _, err = run_cli(["train", "--data", str(data), "--out", str(tmp_path / "m"), "--seed", "-1"], capsys)
    one_line_error(code, err, "--seed must be >= 0")
    argv = ["quantize", str(tmp_path / "nothing"), "--levels", "4", "--out", str(tmp_path / "q"), "--seed", "-2"]
    code, _, err = run_cli([*argv, "--qat-steps", "1", "--data", str(data)], capsys)
    one_line_error(code, err, "--seed must be >= 0")
    assert not (tmp_path / "m").exists() and not (tmp_path / "q").exists()


# ------------------------------------------------------------------------------------------------ windows vs units


def window_starts(corpus, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Global position of the first token of each window random_windows draws from `rng` (same arithmetic)."""
    valid = np.maximum(corpus.shard_lengths - length + 1, 0)
    starts = rng.integers(0, valid.sum(), size=n)
    cum = np.concatenate([[0], np.cumsum(valid)])
    shard = np.searchsorted(cum, starts, side="right") - 1
    return corpus.offsets[shard] + starts - cum[shard]


def run_and_record(data, root, monkeypatch) -> tuple[list, list]:
    """Train and QAT-quantize a tiny GPT with seed SEED; the positions of every window each drew, call by call.

    random_windows is wrapped so that each call's windows are recovered from a copy of the generator it is given,
    and checked against the tokens it returns: the record is what the code really used, whatever stream it was."""
    real = windows.random_windows
    calls: list = []

    def recording(corpus, n, length, rng, **kwargs):
        starts = window_starts(corpus, n, length, copy.deepcopy(rng))
        out = real(corpus, n, length, rng, **kwargs)
        positions = starts[:, None] + np.arange(length)
        assert np.array_equal(np.concatenate(corpus.shards).astype(np.int64)[positions], out)
        calls.append(positions)
        return out

    monkeypatch.setattr(trainer, "random_windows", recording)
    monkeypatch.setattr(windows, "random_windows", recording)  # qat imports it when it runs
    arch = GPTConfig(vocab_size=23, context=CONTEXT, n_layer=1, n_head=2, n_embd=16, dropout=0.1)
    spec = make_spec(arch, {"attn": "dense", "norm": "dense"})
    train(spec, CFG, open_corpus(data), root / "model", progress=False, log=lambda *a: None)
    trained, calls[:] = list(calls), []
    quantize_model(
        root / "model", root / "q", levels=8, qat_steps=QAT_STEPS, data=data, qat_options=QAT, progress=False
    )
    return trained, list(calls)


def todays_stream(seed, purpose):
    """What main did before purpose streams: default_rng(seed) for everything, the trainer's evaluation at +0x5EED."""
    return np.random.default_rng(seed + (0x5EED if purpose == TRAIN_EVAL else 0))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(corpus, [(name, train windows, QAT windows, root)]) for the current streams and for the old ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see conftest.one_torch_thread
    root = tmp_path_factory.mktemp("streams")
    data = write_shards(root / "data", [14_000, 10_000])  # 1,000 training windows of 17 cover about half of it
    out = []
    try:
        with pytest.MonkeyPatch.context() as mp:
            out.append(("purpose streams", *run_and_record(data, root / "new", mp), root / "new"))
        with pytest.MonkeyPatch.context() as mp:  # the positive control: the old single stream, same code otherwise
            mp.setattr(trainer, "stream", todays_stream, raising=False)  # raising=False: also runs on the old code
            mp.setattr(trainer, "torch_seed", lambda seed, purpose: seed, raising=False)
            mp.setattr(qat, "stream", todays_stream, raising=False)
            out.append(("default_rng(seed)", *run_and_record(data, root / "old", mp), root / "old"))
    finally:
        torch.set_num_threads(threads)
    return open_corpus(data), out


def test_windows_come_from_their_purpose_streams(runs):
    """The trainer's and QAT's windows are exactly the replay of their purpose streams, and train_state.json says so."""
    corpus, ((_, trained, qat_calls, root), _) = runs
    assert len(trained) == 1 + CFG.steps * CFG.grad_accum  # the evaluation windows, then the micro-batches
    rng = stream(SEED, TRAIN_EVAL)
    assert np.array_equal(trained[0][:, 0], window_starts(corpus, CFG.eval_batches * CFG.batch_size, CONTEXT + 1, rng))
    rng = stream(SEED, TRAIN_WINDOWS)
    for call in trained[1:]:
        assert np.array_equal(call[:, 0], window_starts(corpus, CFG.batch_size, CONTEXT + 1, rng))
    state = json.loads((root / "model" / "train_state.json").read_text())
    assert state["data_rng"] == rng.bit_generator.state  # the replay consumed the trainer's stream exactly
    assert state["random_streams"]["windows"] == describe(SEED, TRAIN_WINDOWS)
    assert state["random_streams"]["eval_windows"] == describe(SEED, TRAIN_EVAL)
    assert state["random_streams"]["torch"]["torch_seed"] == torch_seed(SEED, TRAIN_TORCH)

    assert len(qat_calls) == 1 + QAT_STEPS  # QAT's evaluation batch, then one batch per step
    rng = stream(SEED, QAT_WINDOWS)
    for call in qat_calls:
        assert np.array_equal(call[:, 0], window_starts(corpus, QAT["batch_size"], CONTEXT + 1, rng))
    manifest = json.loads((root / "q" / MANIFEST).read_text())
    assert manifest["qat"]["random_stream"] == describe(SEED, QAT_WINDOWS)


def overlap(plan, covered: np.ndarray) -> float:
    """Mean over the draws of the fraction of the unit's targets inside a window: E = covered.mean() if independent.

    (Token units: one target drawn uniformly. Blocks: drawn with probability length / m, so sum_b cov_b / m.)"""
    per_unit = np.array([covered[u.positions].mean() for u in plan.units(np.arange(len(plan.keys)))])
    return float(per_unit[plan.draws].mean())


@pytest.mark.parametrize(("mode", "stride"), [("block", 8), ("token", None)])
def test_bound_units_are_independent_of_the_windows_used(runs, mode, stride):
    corpus, results = runs
    req = BoundRequest(model="-", data="-", mode=mode, samples=SAMPLES, context=CONTEXT, stride=stride, seed=SEED)
    figures = {}
    for name, trained, qat_calls, _ in results:
        covered = np.zeros(corpus.n_tokens, dtype=bool)
        covered[np.concatenate([c.reshape(-1) for c in trained + qat_calls])] = True
        baseline = float(covered.mean())
        allowance = ALLOWANCE_SIGMAS * np.sqrt(baseline * (1 - baseline) / SAMPLES)
        # The bound's stream (pipeline.plan_units gets it), and the raw default_rng(seed) the bound used before.
        new = overlap(plan_units(req, corpus, stream(SEED, BOUND_UNITS)), covered)
        old = overlap(plan_units(req, corpus, np.random.default_rng(SEED)), covered)
        figures[name] = (baseline, allowance, new, old)
        print(
            f"{mode} units, windows from {name}: corpus covered {baseline:.3f} (allowance {allowance:.3f}); "
            f"units in windows: bound stream {new:.3f}, default_rng(seed) {old:.3f}"
        )
    baseline, allowance, new, old = figures["default_rng(seed)"]
    assert old > baseline + 0.25  # the bug: one stream everywhere re-draws the training windows
    assert abs(new - baseline) <= allowance  # the bound's stream is independent even of the old windows
    baseline, allowance, new, old = figures["purpose streams"]
    assert abs(new - baseline) <= allowance  # the fix
    assert abs(old - baseline) <= allowance  # and the windows no longer sit on the raw seed's stream either


def test_resume_refuses_a_checkpoint_of_other_streams(tmp_path, one_torch_thread):
    """A checkpoint written before purpose streams drew its windows from default_rng(seed): no exact resume."""
    data = open_corpus(write_shards(tmp_path / "data", [600]))
    spec = make_spec(GPTConfig(vocab_size=23, context=8, n_layer=1, n_head=2, n_embd=8), {"norm": "dense"})
    cfg = TrainConfig(steps=2, batch_size=2, warmup=1, eval_batches=1)
    train(spec, cfg, data, tmp_path / "run", progress=False, log=lambda *a: None, stop_at_step=1)
    path = tmp_path / "run" / "train_state.json"
    state = json.loads(path.read_text())
    assert state["random_streams"] == trainer.random_streams(cfg.seed)
    del state["random_streams"]
    path.write_text(json.dumps(state))
    with pytest.raises(UserError, match="other random streams"):
        train(spec, cfg, data, tmp_path / "run", progress=False, log=lambda *a: None, resume=True)
