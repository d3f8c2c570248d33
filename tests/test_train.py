"""The trainer and `tokenbounds train`: loss goes down, resume is exact, outputs rebuild the model, bad input."""

import argparse
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tokenbounds.cli import train as train_cli
from tokenbounds.data.shards import open_corpus, write_meta
from tokenbounds.errors import UserError
from tokenbounds.models.gpt import GPTConfig, GPTLogitModel
from tokenbounds.models.groups import PARAMETRIZATIONS, SUBSPACE_BY_DEFAULT
from tokenbounds.models.parametrization import (
    build_model,
    free_parameters,
    load_trained,
    make_spec,
)
from tokenbounds.train.config import ModelConfig, parse_groups
from tokenbounds.train.trainer import TrainConfig, learning_rate, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


V = 23
EOT = 22


def write_shards(directory, lengths, seed=0):
    """A learnable corpus: each document counts upwards mod 22 from a random start, then ends with eot."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    entries = []
    for k, length in enumerate(lengths):
        docs, total = [], 0
        while total < length:
            n = min(int(rng.integers(30, 80)), length - total)
            doc = (rng.integers(0, 22) + np.arange(n)) % 22
            doc[-1] = EOT
            docs.append(doc)
            total += n
        tokens = np.concatenate(docs).astype("<u2")
        tokens.tofile(directory / f"shard_{k:05d}.bin")
        entries.append({"file": f"shard_{k:05d}.bin", "tokens": len(tokens)})
    write_meta(directory, {"dtype": "uint16", "vocab_size": V, "eot": EOT, "tokenizer": "test", "shards": entries})
    return directory


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return write_shards(root / "train", [3000, 2000]), write_shards(root / "val", [1500], seed=1)


ARCH = GPTConfig(vocab_size=V, context=16, n_layer=1, n_head=2, n_embd=16, dropout=0.1)


def small_cfg(**kw):
    return TrainConfig(**{"steps": 40, "batch_size": 8, "warmup": 5, "eval_every": 20, "eval_batches": 2, **kw})


def cli(*argv):
    parser = argparse.ArgumentParser()
    train_cli.add_parser(parser.add_subparsers(dest="command"))
    return train_cli.run(parser.parse_args(["train", *argv]))


@pytest.mark.parametrize(
    "groups,extra,lr",
    [
        ({"attn": "dense", "mlp": "dense", "embed": "dense", "pos": "dense", "norm": "dense"}, {}, 1e-2),
        ({"attn": "lora", "mlp": "lora", "embed": "lora", "norm": "dense"}, {"rank": 2, "subspace_dim": 300}, 5e-2),
    ],
)
def test_training_reduces_loss(tmp_path, data, groups, extra, lr):
    spec = make_spec(ARCH, groups, **extra)
    corpus, val = (open_corpus(d) for d in data)
    before = build_model(spec).eval()
    windows = torch.from_numpy(
        np.concatenate([val.shards[0][i : i + 17][None] for i in range(0, 1400, 50)]).astype(np.int64)
    )
    loss0 = torch.nn.functional.cross_entropy(before(windows[:, :-1]).reshape(-1, V), windows[:, 1:].reshape(-1))
    assert loss0 > 0.9 * math.log(V)  # starts near uniform
    result = train(spec, small_cfg(steps=60, lr=lr), corpus, tmp_path / "run", val_corpus=val, progress=False)
    assert result.val_loss < 0.75 * loss0.item()
    assert result.history[-1]["step"] == 60 and result.tokens == 60 * 8 * 16


def test_outputs_rebuild_the_trained_model(tmp_path, data):
    out = tmp_path / "run"
    assert cli("--data", str(data[0]), "--out", str(out), "--n-layer", "1", "--n-embd", "16", "--n-head", "2",
               "--context", "16", "--param", "lora", "--rank", "2", "--groups", "attn,embed,norm",
               "--steps", "6", "--batch-size", "4", "--warmup", "2", "--no-progress") == 0  # fmt: skip
    spec = json.loads((out / "spec.json").read_text())
    assert spec["groups"] == {"attn": "lora", "embed": "lora", "norm": "dense"}
    saved = load_file(str(out / "free_parameters.safetensors"))
    assert set(saved) == set(free_parameters(build_model(spec)))  # exactly the free parameters, nothing else
    model, read = load_trained(out)
    adapter = GPTLogitModel(model, read)
    x = torch.from_numpy(open_corpus(data[0]).shards[0][:16].astype(np.int64))[None]
    rebuilt = build_model(spec)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(adapter.logits(x, torch.arange(16)), rebuilt.eval()(x))
    wte = model.wte  # the tie holds in the trained model
    torch.testing.assert_close(wte(torch.arange(V)), wte.head(torch.eye(16)).T, rtol=0, atol=1e-6)


def test_resume_continues_identically(tmp_path, data):
    spec = make_spec(ARCH, {"attn": "dense", "mlp": "lora", "embed": "dense", "norm": "dense"}, rank=2)
    corpus, val = (open_corpus(d) for d in data)
    cfg = small_cfg(steps=12, eval_every=4, checkpoint_every=5, grad_accum=2)
    whole = train(spec, cfg, corpus, tmp_path / "whole", val_corpus=val, progress=False)
    train(spec, cfg, corpus, tmp_path / "split", val_corpus=val, progress=False, stop_at_step=7)
    assert json.loads((tmp_path / "split" / "train_state.json").read_text())["step"] == 7
    split = train(spec, cfg, corpus, tmp_path / "split", val_corpus=val, progress=False, resume=True)
    a = load_file(str(tmp_path / "whole" / "free_parameters.safetensors"))
    b = load_file(str(tmp_path / "split" / "free_parameters.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["val_loss"] for h in whole.history] == [h["val_loss"] for h in split.history]
    assert [h["train_loss"] for h in whole.history] == [h["train_loss"] for h in split.history]


def test_cli_resume_takes_the_saved_flags_and_refuses_contradictions(tmp_path, data):
    out = str(tmp_path / "run")
    common = ["--data", str(data[0]), "--out", out, "--no-progress"]
    model = ["--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--context", "16", "--rank", "2"]
    cli(*common, *model, "--param", "sublora", "--subspace-dim", "100", "--steps", "4", "--batch-size", "2")
    cli(*common, "--resume")  # nothing given: the saved run is complete, resuming is a no-op
    with pytest.raises(UserError, match="different model spec.*rank"):
        cli(*common, "--resume", "--rank", "3")
    with pytest.raises(UserError, match="training config differs.*lr"):
        cli(*common, "--resume", "--lr", "0.5")


def test_bf16_autocast_trains(tmp_path, data):
    spec = make_spec(ARCH, {"attn": "dense", "norm": "dense"})
    result = train(spec, small_cfg(steps=3, bf16=True), open_corpus(data[0]), tmp_path / "run", progress=False)
    assert math.isfinite(result.val_loss)


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=110, warmup=10, lr=1.0, min_lr_ratio=0.1)
    assert learning_rate(0, cfg) == pytest.approx(0.1)
    assert learning_rate(9, cfg) == pytest.approx(1.0)
    assert learning_rate(60, cfg) == pytest.approx(0.55)  # half-way down the cosine
    assert learning_rate(110, cfg) == pytest.approx(0.1)
    assert all(learning_rate(s, cfg) >= learning_rate(s + 1, cfg) for s in range(10, 110))


def test_refuses_to_overwrite_a_non_empty_out(tmp_path, data):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty.*--resume"):
        cli("--data", str(data[0]), "--out", str(tmp_path / "run"), "--no-progress")


def test_resume_without_a_checkpoint_is_refused(tmp_path, data):
    with pytest.raises(UserError, match="no complete checkpoint"):
        cli("--data", str(data[0]), "--out", str(tmp_path / "nothing"), "--resume", "--no-progress")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "spec.json").write_text("{}")
    with pytest.raises(UserError, match="missing train_state.json"):
        cli("--data", str(data[0]), "--out", str(tmp_path / "partial"), "--resume", "--no-progress")


def test_resume_on_other_data_is_refused(tmp_path, data):
    spec = make_spec(ARCH, {"norm": "dense"})
    train(spec, small_cfg(steps=2), open_corpus(data[0]), tmp_path / "run", progress=False)
    with pytest.raises(UserError, match="other data"):
        train(spec, small_cfg(steps=2), open_corpus(data[1]), tmp_path / "run", progress=False, resume=True)


def test_corpus_smaller_than_one_window_is_refused(tmp_path):
    tiny = write_shards(tmp_path / "tiny", [10])
    with pytest.raises(UserError, match="smaller than one block"):
        cli("--data", str(tiny), "--out", str(tmp_path / "run"), "--context", "16", "--no-progress")


@pytest.mark.parametrize(
    "flags,match",
    [
        (["--rank", "200"], "rank 200 is larger than the width"),
        (["--param", "kronecker", "--kron-factor", "5"], "does not factor"),
        (["--param", "monarch", "--monarch-blocks", "6"], "does not factor"),
        (["--subspace-dim", "100000000"], "larger than the number of trainable parameters"),
        (["--groups", "attn,pos=lora"], "group pos cannot be 'lora'"),
        (["--vocab-size", "5"], "smaller than the corpus vocabulary"),
        (["--steps", "0"], "steps must be >= 1"),
        (["--n-embd", "30", "--n-head", "4"], "multiple of n_head"),
    ],
)
def test_bad_flags_are_user_errors(tmp_path, data, flags, match):
    with pytest.raises(UserError, match=match):
        cli("--data", str(data[0]), "--out", str(tmp_path / "run"), "--n-embd", "32", "--n-layer", "1",
            "--context", "16", "--no-progress", *flags)  # fmt: skip


def test_divergence_is_reported_not_saved(tmp_path, data):
    spec = make_spec(ARCH, {"attn": "dense", "mlp": "dense", "embed": "dense", "norm": "dense"})
    with pytest.raises(UserError, match="diverged.*lower --lr"):
        train(spec, small_cfg(steps=20, lr=1e12, warmup=0, grad_clip=0), open_corpus(data[0]), tmp_path / "run",
              progress=False)  # fmt: skip


def test_log_lines_speak_bits_per_token_and_name_what_was_evaluated(tmp_path, data):
    spec = make_spec(ARCH, {"attn": "dense", "norm": "dense"})
    corpus, val = (open_corpus(d) for d in data)
    for name, val_corpus, where in [("a", None, "16 fixed windows of the training corpus"), ("b", val, "validation")]:
        lines = []
        result = train(spec, small_cfg(steps=4, eval_every=2), corpus, tmp_path / name, val_corpus=val_corpus,
                       progress=False, log=lines.append)  # fmt: skip
        evals = [line for line in lines if line.startswith("step ")]
        assert len(evals) == 2 and not any("nats" in line or "no --val" in line for line in lines)
        last = result.history[-1]
        assert f"train {last['train_loss'] / math.log(2):.3f} bits/token" in evals[-1]
        assert f"{where}" in evals[-1] and f"{result.val_loss / math.log(2):.3f} bits/token" in evals[-1]
        assert last["train_bits_per_token"] == pytest.approx(last["train_loss"] / math.log(2))


def test_progress_bar_says_what_it_counts(tmp_path, data, capsys):
    spec = make_spec(ARCH, {"norm": "dense"})
    train(spec, small_cfg(steps=2), open_corpus(data[0]), tmp_path / "run", log=lambda line: None)
    bar = capsys.readouterr().err
    assert "training:" in bar and "step" in bar and "bits/token" in bar


def test_every_named_parametrization_is_what_train_param_resolves_to():
    for name, groups in PARAMETRIZATIONS.items():
        spec = ModelConfig(param=name).spec(corpus_vocab=V)
        assert spec["groups"] == groups
        assert (spec["subspace"] is not None) == (name in SUBSPACE_BY_DEFAULT)
    # a bare group takes the named parametrization's kind of linears
    assert parse_groups("attn,embed", "sublora") == {"attn": "lora", "embed": "lora"}


def test_cli_records_every_setting_and_resume_keeps_the_saved_ones(tmp_path, data):
    out = tmp_path / "run"
    common = ["--data", str(data[0]), "--out", str(out), "--no-progress"]
    model = ["--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--context", "16", "--param", "lora"]
    assert cli(*common, *model, "--rank", "2", "--steps", "4", "--batch-size", "2", "--checkpoint-every", "2") == 0
    state = json.loads((out / "train_state.json").read_text())
    settings = {**dataclasses.asdict(ModelConfig()), **dataclasses.asdict(TrainConfig())}
    settings.update(n_layer=1, n_embd=16, n_head=2, context=16, param="lora", rank=2, steps=4, batch_size=2)
    assert state["settings"] == {**settings, "checkpoint_every": 2}
    assert state["config"]["lr"] == 3e-3  # the trainer records the lr it used: the default for a spec without z
    # Not given on resume: the checkpoint's (the defaults would be another spec); given: must agree with it where it
    # decides the trajectory (checkpoint_every does not).
    assert cli(*common, "--resume", "--checkpoint-every", "3") == 0
    with pytest.raises(UserError, match="training config differs.*steps: 4 -> 5"):
        cli(*common, "--resume", "--steps", "5")
