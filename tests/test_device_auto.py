"""`--device auto`: a Hugging Face model spread over the visible GPUs by accelerate's device map.

Without a GPU the flag is refused in one line. What runs here without one: the path a spread model takes, on a model
accelerate spreads over the CPU and the disk (its hooks are the ones a multi-GPU map installs), which must give the
logits and the scores of the same model loaded plainly; and the loading path (`device_map="auto"` handed to
transformers), with the GPU check lifted. scripts/gpu_scale_check.py runs `--device auto` on a real GPU.
"""

import numpy as np
import pytest
import torch

from tokenbounds.cli import main
from tokenbounds.data.units import Unit
from tokenbounds.errors import UserError
from tokenbounds.models import hf
from tokenbounds.models.base import check_device
from tokenbounds.models.scorer import score_units

from .conftest import EOT, VOCAB

NO_GPU = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_auto_without_gpus_is_one_clear_line(tiny_gpt2, tiny_corpus, capsys):
    args = ["bound", "--model", str(tiny_gpt2), "--data", str(tiny_corpus), "--message-bits", "2000"]
    code = main([*args, "--context", "32", "--samples", "50", "--device", "auto", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "device 'auto'" in err and "no CUDA GPU" in err and "use cpu" in err
    with pytest.raises(UserError, match="no CUDA GPU"):
        hf.load_model(tiny_gpt2, "float32", "auto")  # the backend checks it too, not only the command line


def test_check_device_names_auto_among_the_choices():
    with pytest.raises(UserError, match="use cpu, cuda, cuda:N or auto"):
        check_device("tpu-ish")


@pytest.fixture(scope="module")
def spread_and_plain(tiny_gpt2, tmp_path_factory):
    """The tiny GPT-2 spread by accelerate (one block on the disk: hooks on every module, as over several GPUs)
    next to the same checkpoint loaded plainly."""
    placement = {name: "cpu" for name in ("transformer.wte", "transformer.wpe", "transformer.drop", "transformer.h.0")}
    placement.update({"transformer.h.1": "disk", "transformer.ln_f": "cpu", "lm_head": "cpu"})
    offload = tmp_path_factory.mktemp("offload")
    model, info = hf._from_pretrained(tiny_gpt2, torch.float32, device_map=placement, offload_folder=str(offload))
    hf.check_loading_info(info, tiny_gpt2)
    assert len(set(model.hf_device_map.values())) > 1  # accelerate hooked it
    spread = hf.HFLogitModel(model, str(tiny_gpt2), "huggingface directory", "float32", "auto")
    return spread, hf.load_model(tiny_gpt2, "float32", "cpu")


def test_a_spread_model_gives_the_plain_models_logits(spread_and_plain):
    spread, plain = spread_and_plain
    assert spread.device == torch.device("cpu") and spread.device_map and not plain.device_map
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, VOCAB, size=(3, 24)))
    # A suffix (what the scorer asks for) is the same computation, bit for bit; other positions are taken from the
    # full logits, whose head runs on a different matrix shape (last-bit differences).
    suffixes, others = (torch.arange(5, 24), torch.arange(23, 24)), (torch.tensor([0, 7, 23]), torch.arange(2, 9))
    for keep, tolerance in [(k, 0.0) for k in suffixes] + [(k, 1e-6) for k in others]:
        got, want = spread.logits(ids, keep), plain.logits(ids, keep)
        assert got.shape == want.shape == (3, len(keep), VOCAB) and got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=tolerance)
    details = spread.describe()["details"]
    assert details["modules_per_device"] == {"cpu": 6, "disk": 1} and plain.describe()["details"] == {}


def test_a_spread_model_scores_like_the_plain_model(spread_and_plain):
    spread, plain = spread_and_plain
    rng = np.random.default_rng(1)
    units = [Unit(np.concatenate([[EOT], rng.integers(0, EOT, n)]), 1, np.arange(n)) for n in (5, 17, 30)]
    got, want = (score_units(m, units, alphas=[0.05], ks=[1, 5], progress=False) for m in (spread, plain))
    for name in ("logp", "rank", "entropy_bits", "outside_topk"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))


def test_auto_hands_the_device_map_to_transformers(tiny_gpt2, monkeypatch):
    """With the GPU check lifted, device "auto" loads through from_pretrained(device_map="auto") and leaves the model
    where accelerate put it (here, with no GPU, all of it on the CPU)."""
    monkeypatch.setattr(hf, "check_device", lambda device: device)
    seen = {}
    real = hf._from_pretrained

    def spy(directory, dtype, **kwargs):
        seen.update(kwargs)
        return real(directory, dtype, **kwargs)

    monkeypatch.setattr(hf, "_from_pretrained", spy)
    model = hf.load_model(tiny_gpt2, "float32", "auto")
    assert seen == {"device_map": "auto"} and model.device == torch.device("cpu")
    ids, keep = torch.tensor([[EOT, 3, 4, 5]]), torch.arange(1, 4)
    torch.testing.assert_close(model.logits(ids, keep), hf.load_model(tiny_gpt2).logits(ids, keep), rtol=0, atol=0)
