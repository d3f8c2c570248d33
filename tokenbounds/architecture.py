"""Which packed format a Hugging Face config names, and how many weights it describes, whatever stores them.

Quantized checkpoints (GPTQ, AWQ, QuIP#) pack several weights into each stored integer, and transformers keeps the
packed integers as buffers, so neither the tensor headers nor `model.parameters()` count the weights. The dense
architecture the config describes does: it is built here on torch's meta device (no memory, no weights read).
"""

import json
from pathlib import Path

PACKED_CONFIG_KEYS = ("quantization_config", "quip_params")


def packed_format(config_dir: str | Path) -> str | None:
    """The quantization format `config_dir`/config.json names ("QuIP#", "gptq", "awq", ...), else None (also when
    there is no readable config.json). `quip_params` is what quip-sharp's own loader looks for."""
    try:
        config = json.loads((Path(config_dir) / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(config, dict):
        return None
    if "quip_params" in config:
        return "QuIP#"
    quantization = config.get("quantization_config")
    if isinstance(quantization, dict):
        return str(quantization.get("quant_method", "packed"))
    return None


def dense_parameter_count(config_dir: str | Path) -> int | None:
    """Parameters (tied weights once) of the dense architecture in `config_dir`/config.json, with its quantization
    settings removed; None when transformers cannot build the architecture."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(config_dir, local_files_only=True, trust_remote_code=False)
        for key in PACKED_CONFIG_KEYS:
            if hasattr(config, key):
                delattr(config, key)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except Exception:  # an architecture transformers cannot build: the count is unknown, nothing else is
        return None
    return sum(p.numel() for p in model.parameters())
