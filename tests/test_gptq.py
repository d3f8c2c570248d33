"""GPTQ checkpoints load through transformers + gptqmodel, on the CPU too, and are the model their numbers say.

gptqmodel needs a newer torch than the pinned CPU build, so CI skips this file; run it in an environment with
`optimum` and `gptqmodel` installed. The checkpoint is written by hand from the GPTQ format (4-bit, symmetric,
groups of 32, the original "gptq" layout: 8 codes per int32 along the input dimension, zeros stored minus one), next
to a dense twin holding the dequantized weights scale * (code - zero): the two must give the same logits.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tokenbounds.models.hf import load_model

pytest.importorskip("gptqmodel")
pytest.importorskip("optimum")

BITS, GROUP = 4, 32


def pack_along_rows(codes: torch.Tensor) -> torch.Tensor:
    """(R, C) 4-bit codes -> (R / 8, C) int32, code 8i + j in bits 4j..4j+3 of row i."""
    packed = torch.zeros(codes.shape[0] // 8, codes.shape[1], dtype=torch.int32)
    for j in range(8):
        packed |= codes[j::8] << (4 * j)
    return packed


def write_gptq_and_twin(dense_dir, root):
    generator = torch.Generator().manual_seed(0)
    tensors, twin = {}, {}
    for name, weight in load_file(dense_dir / "model.safetensors").items():
        if not (name.endswith("proj.weight") and ".layers." in name):
            tensors[name] = twin[name] = weight
            continue
        out_features, in_features = weight.shape
        codes = torch.randint(0, 16, (in_features, out_features), generator=generator, dtype=torch.int32)
        zeros = torch.randint(6, 11, (in_features // GROUP, out_features), generator=generator, dtype=torch.int32)
        scales = (torch.rand(in_features // GROUP, out_features, generator=generator) * 0.02 + 0.005).half()
        group_of = torch.arange(in_features, dtype=torch.int32) // GROUP
        base = name.removesuffix(".weight")
        tensors[f"{base}.qweight"] = pack_along_rows(codes)
        tensors[f"{base}.qzeros"] = pack_along_rows((zeros - 1).T.contiguous()).T.contiguous()
        tensors[f"{base}.scales"] = scales
        tensors[f"{base}.g_idx"] = group_of
        dequantized = scales.float()[group_of] * (codes - zeros[group_of]).float()
        twin[name] = dequantized.T.contiguous().half().float()  # the kernels dequantize in float16
    config = json.loads((dense_dir / "config.json").read_text())
    quantization = {"quant_method": "gptq", "bits": BITS, "group_size": GROUP, "desc_act": False, "sym": True}
    quantization["checkpoint_format"] = "gptq"
    for sub, state, extra in (("gptq", tensors, {"quantization_config": quantization}), ("twin", twin, {})):
        (root / sub).mkdir()
        save_file(state, root / sub / "model.safetensors", metadata={"format": "pt"})
        (root / sub / "config.json").write_text(json.dumps({**config, **extra}))
    return root / "gptq", root / "twin"


def test_gptq_checkpoint_equals_its_dequantized_twin(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=320,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "dense")
    gptq_dir, twin_dir = write_gptq_and_twin(tmp_path / "dense", tmp_path)
    gptq, twin = load_model(gptq_dir), load_model(twin_dir)
    assert hasattr(gptq.model.model.layers[0].mlp.up_proj, "qweight")  # a GPTQ kernel layer, not a dense one
    described = gptq.describe()
    assert described["format"] == "huggingface directory, gptq-quantized"
    assert described["n_parameters"] == twin.describe()["n_parameters"]  # weights described, not packed integers
    ids = torch.randint(0, 320, (2, 48))
    keep = torch.arange(48)
    expected = twin.logits(ids, keep)
    torch.testing.assert_close(gptq.logits(ids, keep), expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(load_model(tmp_path / "dense").logits(ids, keep), expected, atol=1e-3)
