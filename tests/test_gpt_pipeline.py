"""Trained GPTs through the whole pipeline: train -> quantize (coded free parameters) -> bound on the decoded model."""

import json

import numpy as np
import pytest
import torch

from tokenbounds.compress.model import quantize_model
from tokenbounds.compress.quantized_dir import load_quantized
from tokenbounds.data.shards import open_corpus
from tokenbounds.models.gpt import GPTConfig
from tokenbounds.models.parametrization import build_model, load_free_parameters, make_spec
from tokenbounds.models.registry import open_model
from tokenbounds.train.trainer import TrainConfig, train

from .test_cli_bound import OLD_DEFAULTS, one_line_error, run_cli
from .test_train import write_shards


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # training on 2 shared cores: see conftest.one_torch_thread
    root = tmp_path_factory.mktemp("gpt")
    data = write_shards(root / "data", [3000, 2000])
    arch = GPTConfig(vocab_size=23, context=16, n_layer=1, n_head=2, n_embd=16, dropout=0.1)
    spec = make_spec(arch, {"attn": "lora", "mlp": "lora", "embed": "lora", "norm": "dense"}, rank=2, subspace_dim=200)
    cfg = TrainConfig(steps=60, batch_size=8, warmup=5, lr=5e-2, eval_every=60, eval_batches=1)
    train(spec, cfg, open_corpus(data), root / "model", progress=False, log=lambda *a: None)
    torch.set_num_threads(threads)
    return data, root / "model"


def test_quantized_gpt_round_trip_and_bound(trained, tmp_path, capsys):
    data, model_dir = trained
    out = tmp_path / "q"
    manifest = quantize_model(model_dir, out, levels=16, progress=False)
    assert manifest["quantized_tensors"] == ["z"] and manifest["n_parameters"] == 200
    assert manifest["source"]["format"] == "tokenbounds-gpt"
    # The evaluated model is exactly the decoded one: spec from the message + decoded z.
    weights, _ = load_quantized(out)
    spec = json.loads((out / "config.json").read_text())
    reference = build_model(spec)
    load_free_parameters(reference, {k: torch.from_numpy(v.copy()) for k, v in weights.items()})
    reference.eval()
    loaded = open_model(out)
    ids = torch.from_numpy(np.asarray(open_corpus(data).shards[0][:16], dtype=np.int64))[None]
    keep = torch.arange(16)
    with torch.no_grad():
        assert torch.allclose(loaded.logits(ids, keep), reference(ids, keep=keep).float(), atol=1e-6)
    # And it is not the unquantized model (16 levels change z).
    unquantized = open_model(model_dir)
    assert not torch.allclose(loaded.logits(ids, keep), unquantized.logits(ids, keep))

    report = tmp_path / "r.json"
    code, out_text, err = run_cli(
        [
            "bound",
            "--model",
            str(out),
            "--data",
            str(data),
            "--method",
            "eb",
            "--mode",
            "exhaustive",
            "--rule",
            "block",
            "--context",
            "16",
            "--no-progress",
            "--json",
            str(report),
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads(report.read_text())
    assert result["message_bits"] == manifest["message_bits"]
    assert result["hypothesis"]["backend"] == "tokenbounds-gpt"
    bits = [r for r in result["results"] if r["statistic"] == "bits_per_token"]
    assert all(r["bound"] >= r["empirical"] for r in bits)
    assert min(r["empirical"] for r in bits) < 4.0  # the decoded model learned something (log2 V = 4.52)


def test_trained_directory_priced_by_spec_and_free_parameters(trained, tmp_path, capsys):
    data, model_dir = trained
    report = tmp_path / "r.json"
    code, _, err = run_cli(
        [
            "bound",
            "--model",
            str(model_dir),
            "--data",
            str(data),
            "--checkpoint-size",
            "--context",
            "16",
            "--samples",
            "50",
            *OLD_DEFAULTS,
            "--no-progress",
            "--json",
            str(report),
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads(report.read_text())
    assert [f.split("/")[-1] for f in result["prior"]["files"]] == ["spec.json", "free_parameters.safetensors"]


def test_gpt_qat_refines_centroids(trained, tmp_path):
    data, model_dir = trained
    manifest = quantize_model(
        model_dir,
        tmp_path / "qat",
        levels=4,
        qat_steps=3,
        data=data,
        progress=False,
        qat_options={"length": 16, "batch_size": 4, "lr": 1e-3},
    )
    assert manifest["qat"]["steps"] == 3
    open_model(tmp_path / "qat")  # the refined message decodes to a loadable, verified model


def test_gpt_on_a_device_other_than_cpu_is_refused(trained, tiny_corpus, capsys):
    _, model_dir = trained
    code, _, err = run_cli(
        [
            "bound",
            "--model",
            str(model_dir),
            "--data",
            str(tiny_corpus),
            "--message-bits",
            "10",
            "--device",
            "cuda:0",
            "--no-progress",
        ],
        capsys,
    )
    one_line_error(code, err)
