"""Bounds reached by trained GPTs on the embedded Shakespeare bytes: against wall time, subspace dimension d,
quantization levels, and parametrization (LoRA, SubLoRA, Kronecker, Monarch) at similar budgets.

Every row is a real, valid bound of its own (eb + block sampling + betting, delta = 0.05, all 20 statistics at once),
on the decoded quantized model priced by its coded message. Comparing rows is a study, not a selection: a user who
reports the best row of a study must add log2(number of rows) extra bits.

    python scripts/bench_bounds.py --out runs/bench --json runs/bench.json [--studies time,dim,param,levels]
"""

import argparse
import json
import time
from pathlib import Path

import torch

from tokenbounds.compress.model import quantize_model
from tokenbounds.data.bytes_tokenizer import ByteTokenizer
from tokenbounds.data.embedded import shakespeare_path
from tokenbounds.data.prepare import prepare
from tokenbounds.data.shards import open_corpus
from tokenbounds.models.gpt import GPTConfig
from tokenbounds.models.parametrization import make_spec
from tokenbounds.pipeline import BoundRequest, compute_bound
from tokenbounds.train.trainer import TrainConfig, cpu_has_fast_bf16, train

ARCH = GPTConfig(vocab_size=257, context=128, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
LORA = {"attn": "lora", "mlp": "lora", "embed": "lora", "norm": "dense"}
STRUCTURED = {"embed": "lora", "norm": "dense"}
LR = {"subspace": 1e-2, "other": 3e-3}


def bound(model_dir: Path, data: Path, samples: int, checkpoint_size: bool = False) -> dict:
    """eb + block + betting on the model at model_dir. A quantized directory prices itself; checkpoint_size prices
    spec.json + free_parameters.safetensors by the paper's recipe (tar -czf) instead."""
    report = compute_bound(
        BoundRequest(
            model=str(model_dir),
            data=str(data),
            method="eb",
            mode="block",
            samples=samples,
            context=ARCH.context,
            stride=ARCH.context // 2,
            checkpoint_size=checkpoint_size,
            progress=False,
        )
    )
    best = report["best_bits_per_token"]
    top1 = next(r for r in report["results"] if r.get("k") == 1)
    return {
        "message_bits": report["message_bits"],
        "empirical": best["empirical"],
        "bound": best["bound"],
        "alpha": best["alpha"],
        "top1_error_bound": top1["bound"],
        "score_seconds": report["timing"]["score_seconds"],
    }


def run_config(
    name: str,
    spec: dict,
    lr: float,
    steps: int,
    checkpoints: list[int],
    levels: int,
    work: Path,
    corpus,
    data: Path,
    samples: int,
) -> list[dict]:
    cfg = TrainConfig(
        steps=steps, batch_size=16, lr=lr, warmup=50, eval_every=steps, checkpoint_every=steps, bf16=cpu_has_fast_bf16()
    )
    rows, elapsed = [], 0.0
    out = work / name
    for k, stop in enumerate(checkpoints):
        t = time.perf_counter()
        result = train(
            spec,
            cfg,
            corpus,
            out,
            resume=k > 0,
            stop_at_step=stop if stop < steps else None,
            progress=False,
            log=lambda *a: None,
        )
        elapsed += time.perf_counter() - t
        quantized = work / f"{name}-step{stop}-L{levels}"
        manifest = quantize_model(out, quantized, levels=levels, progress=False)
        row = {
            "config": name,
            "step": result.step,
            "train_seconds": elapsed,
            "levels": levels,
            "free_parameters": manifest["n_parameters"],
            **bound(quantized, data, samples),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="new working directory")
    parser.add_argument("--json", type=Path, help="write all rows here")
    parser.add_argument("--studies", default="time,dim,param,levels")
    parser.add_argument("--steps", type=int, default=1000, help="training steps for the dim and param studies")
    parser.add_argument("--samples", type=int, default=2000, help="blocks sampled per bound")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = args.out / "data"
    if not (data / "meta.json").is_file():  # a second run in the same --out reuses the shards (and trained models)
        prepare([shakespeare_path()], ByteTokenizer(), data, tokenizer_name="bytes", progress=False)
    corpus = open_corpus(data)
    studies = args.studies.split(",")
    rows = []
    common = {"work": args.out, "corpus": corpus, "data": data, "samples": args.samples}
    if "time" in studies:  # one SubLoRA run, bounded at several points of its schedule
        spec = make_spec(ARCH, LORA, rank=4, subspace_dim=10_000)
        rows += [
            {"study": "time", **r}
            for r in run_config("sublora-d1e4-time", spec, LR["subspace"], 2000, [250, 500, 1000, 2000], 16, **common)
        ]
    if "dim" in studies:  # SubLoRA with rank-16 LoRA factors (138k numbers behind P) for every d
        for d in (1_000, 10_000, 100_000):
            spec = make_spec(ARCH, LORA, rank=16, subspace_dim=d)
            rows += [
                {"study": "dim", "d": d, **r}
                for r in run_config(f"sublora-r16-d{d}", spec, LR["subspace"], args.steps, [args.steps], 16, **common)
            ]
    if "param" in studies:  # similar budgets: the free numbers each parametrization trains
        configs = {
            "lora-r4": (make_spec(ARCH, LORA, rank=4), LR["other"]),
            "sublora-r4-d1e4": (make_spec(ARCH, LORA, rank=4, subspace_dim=10_000), LR["subspace"]),
            "kronecker-k4": (
                make_spec(ARCH, {"attn": "kronecker", "mlp": "kronecker", **STRUCTURED}, rank=4, kron_factor=4),
                LR["other"],
            ),
            "monarch-b16": (
                make_spec(ARCH, {"attn": "monarch", "mlp": "monarch", **STRUCTURED}, rank=4, monarch_blocks=16),
                LR["other"],
            ),
        }
        for name, (spec, lr) in configs.items():
            rows += [
                {"study": "param", **r} for r in run_config(name, spec, lr, args.steps, [args.steps], 16, **common)
            ]
    if "levels" in studies:  # one trained SubLoRA model, z coded at several levels, and unquantized (gzip)
        source = args.out / "sublora-d1e4-time"
        if not source.is_dir():
            raise SystemExit("the levels study quantizes the model of the time study: run it too")
        rows.append({"study": "levels", "levels": None, "kmeans": None, **bound(source, data, args.samples, True)})
        print(json.dumps(rows[-1]), flush=True)
        for levels in (2, 4, 8, 16):
            for kmeans in (False, True):
                out = args.out / f"levels-{levels}-{'kmeans' if kmeans else 'uniform'}"
                manifest = quantize_model(source, out, levels=levels, kmeans=kmeans, progress=False)
                row = {
                    "study": "levels",
                    "levels": levels,
                    "kmeans": kmeans,
                    "bits_per_parameter": manifest["bits_per_parameter"],
                    **bound(out, data, args.samples),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
