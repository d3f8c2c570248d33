"""Scoring throughput and peak GPU memory of a random-init ~1B-parameter LLaMA-architecture model, in bf16, at
context 1,024, eb statistics included, against a plain transformers loop over the same tokens, in one run.

    python scripts/gpu_score_check.py                        # on a GPU machine (about 2-3 minutes on an H200)
    python scripts/gpu_score_check.py --device cpu --tiny    # a smoke test of the script itself, anywhere

Nothing is downloaded: the model is built from a LlamaConfig with random weights (its bound would mean nothing; its
speed is what is measured). Prints JSON: tokens/s of each, the ratio, peak GPU memory, and the achieved fraction of
the GPU's bf16 peak, from FLOPs = 2 * parameters * tokens + attention (12 * layers * width * context per token,
causal half counted), labelled as an estimate.
"""

import argparse
import json
import time

import numpy as np
import torch

from tokenbounds.data.units import Unit
from tokenbounds.models.hf import HFLogitModel
from tokenbounds.models.scorer import score_units

ALPHAS = [1e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.25, 0.5]
KS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 50, 100]
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense bf16, the vendors' figures


def build(tiny: bool, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    if tiny:
        cfg = LlamaConfig(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=172,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=1024,
        )
    else:  # ~1.1B parameters: LLaMA-2's shape at width 2048
        cfg = LlamaConfig(
            vocab_size=32000,
            hidden_size=2048,
            intermediate_size=5504,
            num_hidden_layers=22,
            num_attention_heads=16,
            num_key_value_heads=16,
            max_position_embeddings=1024,
        )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    return model.eval(), cfg


def timed(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model: checks the script, measures nothing")
    ap.add_argument("--windows", type=int, default=64, help="1,025-token windows scored (every position)")
    ap.add_argument("--batch-tokens", type=int, default=16384)
    args = ap.parse_args()
    model, cfg = build(args.tiny, args.device)
    n_params = sum(p.numel() for p in model.parameters())
    context = 1024
    rng = np.random.default_rng(0)
    windows = rng.integers(0, cfg.vocab_size, size=(args.windows, context + 1))
    tokens = args.windows * context
    wrapped = HFLogitModel(model, "random-init LlamaForCausalLM", "in-memory", "bfloat16", args.device)
    units = [Unit(w, 1, np.arange(1, context + 1)) for w in windows]

    def plain():  # one window per forward, full logits, float32 log_softmax, gather
        out = []
        with torch.inference_mode():
            for w in windows:
                ids = torch.from_numpy(w[None, :-1]).to(args.device)
                logits = model(input_ids=ids, use_cache=False).logits[0].float()
                target = torch.from_numpy(w[1:]).to(args.device)
                out.append(torch.log_softmax(logits, -1).gather(1, target[:, None])[:, 0].cpu())
        return torch.cat(out).numpy()

    def ours():
        return score_units(wrapped, units, alphas=ALPHAS, ks=KS, max_tokens=args.batch_tokens, progress=False).logp

    plain()  # warm-up: kernels, allocator
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    logp_plain, t_plain = timed(plain, args.device)
    peak_plain = torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else None
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    logp_ours, t_ours = timed(ours, args.device)
    peak_ours = torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else None
    flops_per_token = 2 * n_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * context / 2
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
    achieved = flops_per_token * tokens / t_ours / 1e12
    print(
        json.dumps(
            {
                "device": name,
                "parameters": n_params,
                "tokens": tokens,
                "plain_tokens_per_s": tokens / t_plain,
                "tokenbounds_eb_tokens_per_s": tokens / t_ours,
                "ratio": t_plain / t_ours,
                "peak_gpu_bytes_plain": peak_plain,
                "peak_gpu_bytes_tokenbounds": peak_ours,
                "bits_per_token_difference": float(abs(logp_plain.mean() - logp_ours.mean()) / np.log(2)),
                "estimated_tflops_achieved": achieved,
                "fraction_of_bf16_peak": achieved / peak if peak else None,
                "flops_note": "2 * parameters * tokens + causal attention, an estimate",
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
