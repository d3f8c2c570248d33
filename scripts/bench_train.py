"""Training throughput of each parametrization on a small GPT (a benchmark, not a test).

    PYTHONPATH=. python scripts/bench_train.py [--data SHARDS] [--steps 30] [--threads 1]

Without --data it trains on uniformly random byte tokens (V = 257), which is enough for throughput. For each
parametrization it runs the real trainer for --steps optimizer steps and prints: free parameters (what the message
holds), trainable parameters behind the projection (SubLoRA), tokens/s (the whole training loop, evaluation at the
end included), the training loss of the run and, with --val, the held-out loss at the end, both in bits/token.
"""

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tokenbounds.data.shards import open_corpus, write_meta
from tokenbounds.models.gpt import GPTConfig
from tokenbounds.models.parametrization import build_model, count_parameters, make_spec
from tokenbounds.train.trainer import TrainConfig, train

LORA_GROUPS = {"attn": "lora", "mlp": "lora", "embed": "lora", "norm": "dense"}
DENSE_GROUPS = {"attn": "dense", "mlp": "dense", "embed": "dense", "pos": "dense", "norm": "dense"}


def configurations(arch: GPTConfig) -> list[tuple[str, dict, float, bool]]:
    """(name, spec, learning rate, bf16).

    Pairs at similar message budgets (LoRA r4 ~ Kronecker k4; LoRA r16 ~ Monarch b16); SubLoRA as `train --param
    sublora` builds it (LoRA r4 linears, dense embeddings and norms, all behind P); the intrinsic-dimension model
    (every tensor behind P) at d = 1e3, 1e4, 1e5.
    """
    kron = {**LORA_GROUPS, "attn": "kronecker", "mlp": "kronecker"}
    monarch = {**LORA_GROUPS, "attn": "monarch", "mlp": "monarch"}
    sublora = {"attn": "lora", "mlp": "lora", "embed": "dense", "pos": "dense", "norm": "dense"}
    return [
        ("dense", make_spec(arch, DENSE_GROUPS), 3e-3, False),
        ("dense bf16", make_spec(arch, DENSE_GROUPS), 3e-3, True),
        ("lora r4", make_spec(arch, LORA_GROUPS, rank=4), 3e-3, False),
        ("kronecker k4", make_spec(arch, kron, kron_factor=4), 3e-3, False),
        ("lora r16", make_spec(arch, LORA_GROUPS, rank=16), 3e-3, False),
        ("monarch b16", make_spec(arch, monarch, monarch_blocks=16), 3e-3, False),
        ("sublora r4 d=1e4", make_spec(arch, sublora, rank=4, subspace_dim=10_000), 1e-2, False),
        ("sublora r4 d=1e4 bf16", make_spec(arch, sublora, rank=4, subspace_dim=10_000), 1e-2, True),
        ("subspace(dense) d=1e3", make_spec(arch, DENSE_GROUPS, subspace_dim=1_000), 1e-2, False),
        ("subspace(dense) d=1e4", make_spec(arch, DENSE_GROUPS, subspace_dim=10_000), 1e-2, False),
        ("subspace(dense) d=1e5", make_spec(arch, DENSE_GROUPS, subspace_dim=100_000), 1e-2, False),
        ("subspace(dense) d=1e4 bf16", make_spec(arch, DENSE_GROUPS, subspace_dim=10_000), 1e-2, True),
    ]


def random_corpus(directory: Path, tokens: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    np.random.default_rng(0).integers(0, 257, tokens, dtype=np.uint16).tofile(directory / "shard_00000.bin")
    write_meta(
        directory,
        {"dtype": "uint16", "vocab_size": 257, "eot": 256, "tokenizer": "bytes",
         "shards": [{"file": "shard_00000.bin", "tokens": tokens}]},
    )  # fmt: skip
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="token shards (default: random bytes)")
    parser.add_argument("--val", help="held-out shards: also report the held-out loss after training")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", help="run only configurations whose name contains this")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    arch = GPTConfig(vocab_size=257, context=128, n_layer=4, n_head=4, n_embd=128)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = open_corpus(args.data or random_corpus(Path(tmp) / "data", 1 << 20))
        val = open_corpus(args.val) if args.val else None
        data = args.data or "random bytes"
        print(f"GPT {arch.n_layer}x{arch.n_embd}, context {arch.context}, batch {args.batch_size}, "
              f"{args.steps} steps, {torch.get_num_threads()} thread(s), data: {data}")  # fmt: skip
        print(
            f"{'parametrization':27s} {'free':>9s} {'behind P':>9s} {'tokens/s':>9s} {'train':>6s} {'val':>6s} "
            f"{'build s':>7s}"
        )
        for name, spec, lr, bf16 in configurations(arch):
            if args.only and args.only not in name:
                continue
            t0 = time.perf_counter()
            model = build_model(spec)
            build = time.perf_counter() - t0
            counts = count_parameters(model)
            behind = getattr(model, "n_projected", None)
            cfg = TrainConfig(
                steps=args.steps, batch_size=args.batch_size, lr=lr, warmup=5, eval_every=args.steps,
                eval_batches=16 if val else 1, checkpoint_every=args.steps, bf16=bf16,
            )  # fmt: skip
            out = Path(tmp) / name.replace(" ", "_")
            result = train(spec, cfg, corpus, out, val_corpus=val, progress=False, log=lambda _: None)
            held_out = f"{result.val_loss / math.log(2):6.3f}" if val else f"{'':6s}"
            print(
                f"{name:27s} {counts['free']:9,d} {behind or '':>9} {result.tokens / result.seconds:9,.0f} "
                f"{result.train_loss / math.log(2):6.3f} {held_out} {build:7.2f}"
            )


if __name__ == "__main__":
    main()
