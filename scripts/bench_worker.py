"""What the QuIP# worker process costs: the same units scored in process and through `quip_worker.py`.

The real quip-sharp needs a GPU, so the worker here runs a stand-in checkout whose loader is transformers: the model
and the scorer are identical on both paths, and the difference is the process boundary (ids out, logits back
through a pipe). Full L-token windows, every position scored, V-wide logits per position.

    python scripts/bench_worker.py --model HF_DIR|FILE.gguf --data shards/ --context 512 --windows 8

A .gguf is dequantized once into a float32 safetensors directory in a temporary folder (the worker's stand-in
loader reads Hugging Face directories).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tokenbounds.data.shards import open_corpus
from tokenbounds.data.units import Unit
from tokenbounds.models.hf import load_model
from tokenbounds.models.quip import QuipSharpModel
from tokenbounds.models.scorer import score_units

STAND_IN = """import transformers

def model_from_hf_path(path, use_cuda_graph=True, use_flash_attn=True, device_map="auto"):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype="auto"), "stand-in"
"""


def stand_in(model_dir: Path, root: Path) -> tuple[Path, Path]:
    """A stand-in quip-sharp checkout, and a QuIP#-marked view of `model_dir` (weights linked, not copied)."""
    checkout = root / "quip-sharp"
    (checkout / "lib" / "utils").mkdir(parents=True)
    (checkout / "lib" / "utils" / "__init__.py").write_text("")
    (checkout / "lib" / "utils" / "unsafe_import.py").write_text(STAND_IN)
    marked = root / "model"
    marked.mkdir()
    for f in model_dir.iterdir():
        if f.name != "config.json":
            (marked / f.name).symlink_to(f.resolve())
    config = json.loads((model_dir / "config.json").read_text())
    (marked / "config.json").write_text(json.dumps({**config, "quip_params": {"stand_in": True}}))
    return checkout, marked


def dense_copy(gguf: Path, root: Path) -> Path:
    """The GGUF's dequantized weights as a Hugging Face directory (tied head stored once)."""
    from safetensors.torch import save_file

    model = load_model(gguf).model
    target = root / "dense"
    target.mkdir()
    tied = model.config.tie_word_embeddings
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(state, target / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (target / "config.json").write_text(json.dumps(config))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="a Hugging Face model directory or a .gguf file")
    parser.add_argument("--data", required=True, help="shards from `prepare`")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--batch-tokens", type=int, default=2048)
    args = parser.parse_args()

    shard = np.asarray(open_corpus(args.data).shards[0])
    L = args.context
    windows = [shard[i * L : i * L + L + 1].astype(np.int64) for i in range(args.windows)]
    units = [Unit(w, 1, np.arange(i * L + 1, i * L + L + 1)) for i, w in enumerate(windows)]
    tokens = sum(u.n_targets for u in units)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = dense_copy(args.model, Path(tmp)) if args.model.suffix == ".gguf" else args.model
        checkout, marked = stand_in(model_dir, Path(tmp))
        rows = {}
        for name, make in (
            ("in process", lambda: load_model(model_dir)),
            ("worker process", lambda: QuipSharpModel(marked, checkout, sys.executable, "cpu")),
        ):
            model = make()
            score_units(model, units[:1], max_tokens=args.batch_tokens, progress=False)  # warm-up
            started = time.perf_counter()
            scores = score_units(model, units, max_tokens=args.batch_tokens, progress=False)
            seconds = time.perf_counter() - started
            rows[name] = (tokens / seconds, float(scores.logp.mean()))
            vocab = model.vocab_size
            del model
    print(f"{tokens} scored positions, context {L}, V = {vocab}, torch threads {torch.get_num_threads()}")
    print("| path | tokens/s | mean log p |\n|---|---:|---:|")
    for name, (rate, logp) in rows.items():
        print(f"| {name} | {rate:,.0f} | {logp:.6f} |")
    slowdown = rows["in process"][0] / rows["worker process"][0]
    print(f"worker / in-process time: {slowdown:.3f}")


if __name__ == "__main__":
    main()
