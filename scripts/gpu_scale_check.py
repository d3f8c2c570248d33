"""The same units of a random-init LLaMA-architecture model bounded on cuda and on the CPU, and under torchrun with
1 and 2 processes: the reports must agree (issue 12, item 7).

    python scripts/gpu_scale_check.py --out DIR                          # on a GPU machine (a few minutes)
    python scripts/gpu_scale_check.py --tiny --cpu-only --no-torchrun    # a smoke test of the script, anywhere

Nothing is downloaded: a LlamaConfig model with random weights (seed 0; its bound means nothing, agreement is what
is checked) is saved as a local Hugging Face directory (safetensors, float32), beside a corpus of random documents
with a meta.json. Every run is the real command line, `python -m tokenbounds bound ...` in a subprocess, with the
same arguments and seed, so the same units:

    cpu       --device cpu  --compute-dtype float32      the reference
    cuda32    --device cuda --compute-dtype float32      rows within FP32_BITS of the reference
    cuda16    --device cuda --compute-dtype bfloat16     rows within BF16_BITS (bfloat16 keeps 8 bits of mantissa)
    auto      --device auto --compute-dtype bfloat16     accelerate's device map (one GPU here): rows within FP32_BITS
                                                         of cuda16 (the same weights and kernels)
    torchrun1 torchrun --nproc_per_node 1 ... --device cpu --compute-dtype float32
    torchrun2 torchrun --nproc_per_node 2 ... (gloo: two NCCL ranks cannot share one GPU)
                                                         both: the whole report, timing aside, equal to cpu's, and
                                                         its timing record says it ran in that many processes
    cpu16     --device cpu  --compute-dtype bfloat16     --cpu-only only, in place of the cuda runs: within BF16_BITS

A row's tolerance is in its own unit: bits per token for the bits rows, a rate for the top-k rows, where one token
whose rank flips between two dtypes moves the empirical rate by 1/tokens (TOPK_FLIPS such flips allowed). Prints one
JSON summary (and writes it with every report under --out); exits 1 when a check fails.

On the lent GPU machine (scripts and tokenbounds travel with the working tree; its Python lacks constriction, gguf,
zstandard and brotli, which `tokenbounds` imports at the top of some modules), carry cp312 wheels as the device
README says, then: `python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
PYTHONPATH=/tmp/site:. python3 scripts/gpu_scale_check.py --out $OUT`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FP32_BITS = 1e-3  # cuda float32 against the CPU: different kernels, float32 rounding
BF16_BITS = 0.05  # bfloat16 against float32, on a mean over thousands of tokens
TOPK_FLIPS = 20  # ranks allowed to cross the k-th place between two dtypes, per top-k row
TIMING = ("timing",)  # report keys that hold wall-clock figures


def build_model(directory: Path, tiny: bool) -> dict:
    """A random-init LlamaForCausalLM saved as a Hugging Face directory; returns its shape."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = dict(vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4)
    if not tiny:  # LLaMA's proportions at width 512
        shape = dict(
            vocab_size=8192, hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8
        )
    eot = shape["vocab_size"] - 1
    config = LlamaConfig(
        **shape,
        num_key_value_heads=shape["num_attention_heads"],
        max_position_embeddings=1024,
        bos_token_id=eot,
        eos_token_id=eot,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    return {**shape, "parameters": sum(p.numel() for p in model.parameters()), "eot": eot}


def build_corpus(directory: Path, vocab: int, tokens: int) -> Path:
    """Random documents (mean length 300, eot = vocab - 1) in two shards, with a meta.json like prepare's."""
    from tokenbounds.data.shards import write_meta

    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    entries = []
    for k, n in enumerate((tokens // 2, tokens - tokens // 2)):
        shard = rng.integers(0, vocab - 1, size=n, dtype=np.uint16)
        shard[rng.random(n) < 1 / 300] = vocab - 1
        shard.tofile(directory / f"shard_{k:05d}.bin")
        entries.append({"file": f"shard_{k:05d}.bin", "tokens": n, "max_token_id": int(shard.max())})
    meta = {"dtype": "uint16", "vocab_size": vocab, "eot": vocab - 1, "tokenizer": "random", "n_tokens": tokens}
    write_meta(directory, {**meta, "max_token_id": vocab - 1, "shards": entries, "sources": []})
    return directory


def bound(launcher: list[str], args: list[str], out: Path, env: dict) -> dict:
    """Run `launcher -m tokenbounds bound args --json out`; the report, or {"error": ...} with the output's tail."""
    started = time.perf_counter()
    run = subprocess.run(
        [*launcher, "-m", "tokenbounds", "bound", *args, "--json", str(out)], capture_output=True, text=True, env=env
    )
    seconds = time.perf_counter() - started
    if run.returncode != 0 or not out.is_file():
        return {"error": f"exit {run.returncode} after {seconds:.0f} s: {(run.stderr or run.stdout)[-1500:]}"}
    return {"report": json.loads(out.read_text()), "seconds": seconds}


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def row_differences(a: dict, b: dict, bits: float) -> dict:
    """Each row's largest |difference| over its empirical value and its bound, and whether all are within tolerance
    (bits for the bits rows; TOPK_FLIPS / tokens scored for the top-k rows)."""
    tokens = a["timing"]["scored_targets"]
    worst, ok = {}, True
    for row_a, row_b in zip(a["results"], b["results"], strict=True):
        label = f"{row_a['statistic']} {row_a.get('alpha', row_a.get('k'))}"
        diff = max(abs(row_a[key] - row_b[key]) for key in ("empirical", "bound"))
        allowed = bits if row_a["statistic"] == "bits_per_token" else TOPK_FLIPS / tokens
        worst[label] = diff
        ok &= diff <= allowed
    return {"max_difference": max(worst.values()), "per_row": worst, "within_tolerance": bool(ok)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model and a small corpus: checks the script")
    ap.add_argument("--cpu-only", action="store_true", help="skip the cuda and auto runs")
    ap.add_argument("--no-torchrun", action="store_true", help="skip the torchrun runs")
    ap.add_argument("--samples", type=int, default=None, help="blocks sampled (default: 96; 24 with --tiny)")
    ap.add_argument("--out", help="write the summary and every report here")
    args = ap.parse_args()
    samples = args.samples or (24 if args.tiny else 96)
    context = 64 if args.tiny else 256
    # the child processes import this checkout's tokenbounds, whatever the working directory
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    python = [sys.executable]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    summary: dict = {"checks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = Path(args.out) if args.out else tmp / "reports"
        out.mkdir(parents=True, exist_ok=True)
        summary["model"] = build_model(tmp / "model", args.tiny)
        data = build_corpus(tmp / "data", summary["model"]["vocab_size"], 20_000 if args.tiny else 400_000)
        common = ["--model", str(tmp / "model"), "--data", str(data), "--message-bits", "100000", "--no-progress"]
        common += ["--mode", "block", "--context", str(context), "--samples", str(samples), "--seed", "7"]
        runs = {"cpu": (python, ["--device", "cpu", "--compute-dtype", "float32"])}
        if args.cpu_only:  # the comparison the cuda runs get, on the CPU (slow there at full size: no native bf16)
            runs["cpu16"] = (python, ["--device", "cpu", "--compute-dtype", "bfloat16"])
        else:
            runs["cuda32"] = (python, ["--device", "cuda", "--compute-dtype", "float32"])
            runs["cuda16"] = (python, ["--device", "cuda", "--compute-dtype", "bfloat16"])
            runs["auto"] = (python, ["--device", "auto", "--compute-dtype", "bfloat16"])
        if not args.no_torchrun:
            for n in (1, 2):
                runs[f"torchrun{n}"] = (
                    [*torchrun, "--nproc_per_node", str(n)],
                    ["--device", "cpu", "--compute-dtype", "float32"],
                )
        results = {}
        for name, (launcher, extra) in runs.items():
            results[name] = bound(launcher, [*common, *extra], out / f"{name}.json", env)
            status = results[name].get("error") or f"{results[name]['seconds']:.0f} s"
            print(f"{name}: {status}", file=sys.stderr)
        summary["runs"] = {k: v.get("error") or {"seconds": v["seconds"]} for k, v in results.items()}
        reports = {k: v["report"] for k, v in results.items() if "report" in v}
        if "cpu" in reports:
            summary["best_bits_per_token_cpu"] = reports["cpu"]["best_bits_per_token"]
        for name, reference, bits in (
            ("cuda32", "cpu", FP32_BITS),
            ("cuda16", "cpu", BF16_BITS),
            ("cpu16", "cpu", BF16_BITS),
        ):
            if name in reports and reference in reports:
                summary["checks"][f"{name} vs {reference}"] = row_differences(reports[name], reports[reference], bits)
        if "auto" in reports and "cuda16" in reports:
            summary["checks"]["auto vs cuda16"] = row_differences(reports["auto"], reports["cuda16"], FP32_BITS)
            summary["auto_device"] = reports["auto"]["hypothesis"]["device"]
        for n in (1, 2):
            name = f"torchrun{n}"
            if name in reports and "cpu" in reports:
                same = without_timing(reports[name]) == without_timing(reports["cpu"])
                processes = reports[name]["timing"].get("processes")  # N copies of a single-process run: not this
                summary["checks"][f"{name} vs cpu (whole report, timing aside)"] = {
                    "identical": same and processes == n,
                    "processes": processes,
                }
        failed = [k for k, v in summary["runs"].items() if isinstance(v, str)]
        failed += [k for k, v in summary["checks"].items() if not v.get("within_tolerance", v.get("identical"))]
        summary["failed"] = failed
        text = json.dumps(summary, indent=1)
        (out / "summary.json").write_text(text + "\n")
    print(text)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
