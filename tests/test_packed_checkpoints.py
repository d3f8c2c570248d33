"""GPTQ and AWQ checkpoints load through transformers + gptqmodel, on the CPU too, and are the model their numbers say.

gptqmodel pins numpy and brings many packages, so these tests run in their own environment
(`bash scripts/setup.sh .venv-packed test,packed`, as CI does); the main suite skips them. Each checkpoint is
written by hand from its format (4-bit, groups of 32), next to a dense twin holding the dequantized weights
scale * (code - zero): the two must give the same logits.
- GPTQ, the original "gptq" layout: 8 codes per int32 along the input dimension; zeros packed along the output
  dimension and stored minus one.
- AWQ, the "gemm" layout: 8 codes per int32 along the output dimension in the interleaved order 0 2 4 6 1 3 5 7
  (word bits 4i..4i+3 hold column order[i] of the group); zeros packed the same way, stored as they are.
"""

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from tokenbounds.models.hf import load_model

if os.environ.get("TOKENBOUNDS_REQUIRE_PACKED"):  # CI's packed environment: a missing package is a failure
    import gptqmodel  # noqa: F401
    import optimum  # noqa: F401
else:
    pytest.importorskip("gptqmodel")
    pytest.importorskip("optimum")

BITS, GROUP = 4, 32


def pack_along_rows(codes: torch.Tensor) -> torch.Tensor:
    """(R, C) 4-bit codes -> (R / 8, C) int32, code 8i + j in bits 4j..4j+3 of row i."""
    packed = torch.zeros(codes.shape[0] // 8, codes.shape[1], dtype=torch.int32)
    for j in range(8):
        packed |= codes[j::8] << (4 * j)
    return packed


AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def pack_awq_columns(codes: torch.Tensor) -> torch.Tensor:
    """(R, C) 4-bit codes -> (R, C / 8) int32, bits 4i..4i+3 of word j holding column 8j + AWQ_ORDER[i]."""
    packed = torch.zeros(codes.shape[0], codes.shape[1] // 8, dtype=torch.int32)
    for i, column in enumerate(AWQ_ORDER):
        packed |= codes[:, column::8] << (4 * i)
    return packed


def write_packed_and_twin(dense_dir, root, method: str):
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
        group_of = torch.arange(in_features) // GROUP
        base = name.removesuffix(".weight")
        if method == "gptq":
            tensors[f"{base}.qweight"] = pack_along_rows(codes)
            tensors[f"{base}.qzeros"] = pack_along_rows((zeros - 1).T.contiguous()).T.contiguous()
            tensors[f"{base}.g_idx"] = group_of.to(torch.int32)
        else:
            tensors[f"{base}.qweight"] = pack_awq_columns(codes)
            tensors[f"{base}.qzeros"] = pack_awq_columns(zeros)
        tensors[f"{base}.scales"] = scales
        dequantized = scales.float()[group_of] * (codes - zeros[group_of]).float()
        twin[name] = dequantized.T.contiguous().half().float()  # the kernels dequantize in float16
    config = json.loads((dense_dir / "config.json").read_text())
    quantization = {"quant_method": method, "bits": BITS, "group_size": GROUP}
    if method == "gptq":
        quantization.update(desc_act=False, sym=False, checkpoint_format="gptq")
    else:
        quantization.update(zero_point=True, version="gemm")
    for sub, state, extra in ((method, tensors, {"quantization_config": quantization}), ("twin", twin, {})):
        (root / sub).mkdir()
        save_file(state, root / sub / "model.safetensors", metadata={"format": "pt"})
        (root / sub / "config.json").write_text(json.dumps({**config, **extra}))
    return root / method, root / "twin"


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_packed_checkpoint_equals_its_dequantized_twin(tmp_path, method):
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
    packed_dir, twin_dir = write_packed_and_twin(tmp_path / "dense", tmp_path, method)
    packed, twin = load_model(packed_dir), load_model(twin_dir)
    assert hasattr(packed.model.model.layers[0].mlp.up_proj, "qweight")  # a kernel layer, not a dense one
    described = packed.describe()
    assert described["format"] == f"huggingface directory, {method}-quantized"
    assert described["n_parameters"] == twin.describe()["n_parameters"]  # weights described, not packed integers
    ids = torch.randint(0, 320, (2, 48))
    keep = torch.arange(48)
    expected = twin.logits(ids, keep)
    torch.testing.assert_close(packed.logits(ids, keep), expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(load_model(tmp_path / "dense").logits(ids, keep), expected, atol=1e-3)
