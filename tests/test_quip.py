"""QuIP# checkpoints through a quip-sharp worker process.

The real quip-sharp needs its CUDA kernels, so these tests stand in a checkout whose `model_from_hf_path` (the one
entry point the worker calls) loads the checkpoint with transformers. Everything on tokenbounds' side is real: the
subprocess, the protocol, the checkpoint checks, the scorer and the report.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tokenbounds.cli import main
from tokenbounds.data.shards import open_corpus
from tokenbounds.data.units import token_unit
from tokenbounds.errors import UserError
from tokenbounds.models.hf import load_model
from tokenbounds.models.quip import QuipSharpModel, is_quip_checkpoint
from tokenbounds.models.registry import open_model
from tokenbounds.models.scorer import score_units

STAND_IN_LOADER = """
import os
import transformers

def model_from_hf_path(path, use_cuda_graph=True, use_flash_attn=True, device_map="auto"):
    assert not use_cuda_graph and not use_flash_attn, "the worker must turn CUDA graphs and flash attention off"
    if os.environ.get("STAND_IN_FAIL"):
        raise ImportError("No module named 'quiptools_cuda'")
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    if os.environ.get("STAND_IN_FAIL_FORWARD"):
        def broken(*args, **kwargs):
            raise RuntimeError("CUDA out of memory")
        model.forward = broken
    return model, "stand-in/base-model"
"""


def make_stand_in(root):
    """A stand-in quip-sharp checkout at `root`, committed to git so the decoder's commit can be recorded."""
    (root / "lib" / "utils").mkdir(parents=True)
    (root / "lib" / "utils" / "__init__.py").write_text("")  # like quip-sharp, lib/ itself has no __init__.py
    (root / "lib" / "utils" / "unsafe_import.py").write_text(STAND_IN_LOADER)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "stand-in"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    return root, commit


@pytest.fixture(scope="module")
def quip_sharp(tmp_path_factory):
    return make_stand_in(tmp_path_factory.mktemp("quip-sharp"))


def quip_copy(tiny_gpt2, target, edit=None):
    shutil.copytree(tiny_gpt2, target)
    config = json.loads((target / "config.json").read_text())
    config["quip_params"] = {"codebook": "E8P12", "stand_in": True}
    (target / "config.json").write_text(json.dumps(config))
    if edit is not None:
        tensors = load_file(target / "model.safetensors")
        edit(tensors)
        save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


@pytest.fixture(scope="module")
def quip_model(tiny_gpt2, tmp_path_factory):
    return quip_copy(tiny_gpt2, tmp_path_factory.mktemp("quip") / "model")


def test_detects_quip_checkpoints(quip_model, tiny_gpt2):
    assert is_quip_checkpoint(quip_model)
    assert not is_quip_checkpoint(tiny_gpt2)


def test_worker_scores_equal_in_process_scores(quip_model, quip_sharp, tiny_gpt2, tiny_corpus):
    corpus = open_corpus(tiny_corpus)
    units = [token_unit(corpus, p, 40) for p in range(3, corpus.n_tokens, 37)]
    kwargs = dict(alphas=[0.01, 0.5], ks=[1, 3], max_tokens=300, progress=False)
    model = QuipSharpModel(quip_model, quip_sharp[0], sys.executable, "cpu")
    remote = score_units(model, units, **kwargs)
    local = score_units(load_model(tiny_gpt2), units, **kwargs)
    np.testing.assert_allclose(remote.logp, local.logp, atol=1e-5)
    np.testing.assert_allclose(remote.entropy_bits, local.entropy_bits, atol=1e-4)
    np.testing.assert_allclose(remote.outside_topk, local.outside_topk, atol=1e-5)
    assert np.array_equal(remote.rank, local.rank)
    described = model.describe()
    details = described["details"]
    assert details["decoder"]["commit"] == quip_sharp[1]
    assert details["decoder"]["modified"] is False
    assert details["base_model"] == "stand-in/base-model"
    assert details["quip_params"]["codebook"] == "E8P12"
    assert described["compute_dtype"] == "float32" and described["vocab_size"] == model.vocab_size
    assert described["n_parameters"] == load_model(tiny_gpt2).describe()["n_parameters"]


def test_quip_checkpoint_without_quip_sharp_is_refused(quip_model):
    with pytest.raises(UserError, match="QuIP# checkpoint .* pass --quip-sharp"):
        open_model(quip_model)


def test_quip_sharp_for_another_model_is_refused(tiny_gpt2, quip_sharp):
    with pytest.raises(UserError, match="is not one"):
        open_model(tiny_gpt2, quip_sharp=quip_sharp[0])


def test_not_a_checkout_is_refused(quip_model, tmp_path):
    with pytest.raises(UserError, match="not a quip-sharp checkout"):
        open_model(quip_model, quip_sharp=tmp_path)


def test_import_failure_is_one_line(quip_model, quip_sharp, monkeypatch):
    monkeypatch.setenv("STAND_IN_FAIL", "1")
    with pytest.raises(UserError, match=r"could not load .*quiptools_cuda.*pass --device cuda\)$"):
        open_model(quip_model, quip_sharp=quip_sharp[0])


def test_failure_while_scoring_is_one_line(quip_model, quip_sharp, monkeypatch):
    monkeypatch.setenv("STAND_IN_FAIL_FORWARD", "1")
    model = open_model(quip_model, quip_sharp=quip_sharp[0])
    with pytest.raises(UserError, match="failed while scoring: RuntimeError: CUDA out of memory"):
        model.logits(torch.zeros(1, 5, dtype=torch.int64), torch.arange(5))


def test_worker_that_dies_is_one_line(quip_model, tmp_path):
    fake_checkout = tmp_path / "qs"
    (fake_checkout / "lib" / "utils").mkdir(parents=True)
    (fake_checkout / "lib" / "utils" / "unsafe_import.py").write_text("import os\nos._exit(3)\n")
    with pytest.raises(UserError, match=r"worker stopped while loading the checkpoint \(exit status 3\)"):
        QuipSharpModel(quip_model, fake_checkout, sys.executable, "cpu")


def test_unused_checkpoint_tensor_is_refused(tiny_gpt2, quip_sharp, tmp_path):
    extra = quip_copy(tiny_gpt2, tmp_path / "m", lambda t: t.update({"transformer.h.0.mlp.Qidxs": torch.zeros(8)}))
    with pytest.raises(UserError, match=r"1 tensor\(s\) not used by the model: transformer.h.0.mlp.Qidxs"):
        open_model(extra, quip_sharp=quip_sharp[0])


def test_missing_checkpoint_tensor_is_refused_not_randomly_initialised(tiny_gpt2, quip_sharp, tmp_path):
    lacking = quip_copy(tiny_gpt2, tmp_path / "m", lambda t: t.pop("transformer.h.1.attn.c_proj.weight"))
    with pytest.raises(UserError, match=r"1 tensor\(s\) missing from the checkpoint: transformer.h.1.attn.c_proj"):
        open_model(lacking, quip_sharp=quip_sharp[0])


def test_pickled_code_in_bin_checkpoint_is_refused(tiny_gpt2, quip_sharp, tmp_path):
    model = quip_copy(tiny_gpt2, tmp_path / "m")
    tensors = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    torch.save({**tensors, "payload": shutil.rmtree}, model / "pytorch_model.bin")  # a callable, not a tensor
    with pytest.raises(UserError, match="does not load with weights_only=True"):
        open_model(model, quip_sharp=quip_sharp[0])


def test_bound_command_prices_the_checkpoint_and_records_the_decoder(quip_model, quip_sharp, tiny_corpus, tmp_path):
    out = tmp_path / "report.json"
    args = ["bound", "--model", str(quip_model), "--quip-sharp", str(quip_sharp[0]), "--quip-python", sys.executable]
    args += ["--data", str(tiny_corpus), "--context", "32", "--samples", "40", "--checkpoint-size"]
    assert main([*args, "--json", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["hypothesis"]["format"].startswith("QuIP#")
    assert report["hypothesis"]["details"]["decoder"]["commit"] == quip_sharp[1]
    files = {p.split("/")[-1] for p in report["prior"]["files"]}
    assert files == {"config.json", "model.safetensors"}


def test_quip_python_alone_is_refused(tiny_gpt2, tiny_corpus, capsys):
    args = ["bound", "--model", str(tiny_gpt2), "--data", str(tiny_corpus), "--quip-python", sys.executable]
    assert main([*args, "--message-bits", "100"]) == 2
    assert "--quip-python needs --quip-sharp" in capsys.readouterr().err


def test_float16_logits_travel_exactly(tiny_gpt2, quip_sharp, tmp_path):
    def to_half(tensors):
        for name in tensors:
            tensors[name] = tensors[name].half()

    model_dir = quip_copy(tiny_gpt2, tmp_path / "m", to_half)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "torch_dtype": "float16", "dtype": "float16"}))
    model = QuipSharpModel(model_dir, quip_sharp[0], sys.executable, "cpu")
    assert model.describe()["compute_dtype"] == "float16"
    ids = torch.randint(0, model.vocab_size, (2, 9))
    keep = torch.tensor([0, 4, 8])
    local = load_model(model_dir).model.half()  # in process: the same float16 weights
    got = model.logits(ids, keep)
    assert got.dtype == torch.float32
    expected = local(input_ids=ids).logits[:, keep].float()
    assert torch.equal(got, expected)


def test_missing_quip_python_is_one_line(quip_model, quip_sharp, tiny_corpus, tmp_path, capsys):
    args = ["bound", "--model", str(quip_model), "--quip-sharp", str(quip_sharp[0])]
    args += ["--quip-python", str(tmp_path / "no-such-python"), "--data", str(tiny_corpus), "--message-bits", "100"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "could not start the quip-sharp worker" in err and len(err.splitlines()) == 1
