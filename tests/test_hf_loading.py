"""Loading Hugging Face directories: a checkpoint that does not fill the architecture exactly is refused."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tokenbounds.errors import UserError
from tokenbounds.models.hf import load_model


def _edited_copy(source, target, edit):
    shutil.copytree(source, target)
    tensors = load_file(target / "model.safetensors")
    edit(tensors)
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_complete_checkpoint_loads(tiny_gpt2):
    assert load_model(tiny_gpt2).describe()["n_parameters"] > 0


def test_missing_tensor_is_refused_not_randomly_initialised(tiny_gpt2, tmp_path):
    copy = _edited_copy(tiny_gpt2, tmp_path / "m", lambda t: t.pop("transformer.h.0.mlp.c_fc.weight"))
    with pytest.raises(UserError, match=r"1 tensor\(s\) missing .*transformer.h.0.mlp.c_fc.weight"):
        load_model(copy)


def test_unused_tensor_is_refused(tiny_gpt2, tmp_path):
    # A QuIP#-style tensor a stock architecture has no place for: the model would silently be another one.
    copy = _edited_copy(tiny_gpt2, tmp_path / "m", lambda t: t.update({"transformer.h.0.mlp.Qidxs": torch.zeros(4)}))
    with pytest.raises(UserError, match=r"not used by the architecture: transformer.h.0.mlp.Qidxs"):
        load_model(copy)


def test_wrong_shape_is_refused(tiny_gpt2, tmp_path):
    def shrink(t):
        t["transformer.h.1.ln_1.weight"] = t["transformer.h.1.ln_1.weight"][:-1].clone()

    with pytest.raises(UserError):
        load_model(_edited_copy(tiny_gpt2, tmp_path / "m", shrink))
