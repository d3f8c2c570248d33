"""Peak anonymous memory of `tokenbounds bound --mode exhaustive --rule block` against the corpus size m.

    PYTHONPATH=. python scripts/bench_memory.py [--sizes 1e6,1e7] [--method lotfi] [--json OUT]

For each size it writes a corpus of random documents (uint16 shards and a meta.json, as `prepare` writes them) and a
random-init tiny GPT-2 (V = 128), runs the real command line in a subprocess and reads the child's
/proc/PID/status every millisecond or so, keeping the largest RssAnon: the resident anonymous pages (heap, numpy and
torch buffers). Mapped file pages (the shards, the shared libraries: RssFile) are not counted; VmHWM would count them,
and the shards' pages grow with m even where the process holds nothing of its own. An allocation large enough to
matter is faulted in page by page over many polls, so the peak cannot hide between two reads.

Exhaustive statistics that stream (O(1) in m) give a flat peak; per-token arrays kept to the end give one that grows
by about their bytes per token times m. It prints a table and the growth per token between the smallest and largest
size, and --json writes the figures. One torch thread (OMP_NUM_THREADS=1): the figures are memory, not speed.
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

VOCAB = 128
EOT = 127
SHARD_TOKENS = 4_000_000  # several shards at 10^7, as prepare would write them


def peak_anon_rss(command: list[str], env: dict | None = None, timeout: float = 3600.0) -> dict:
    """Run `command`; return its exit code, peak RssAnon in bytes (polled), wall seconds, stdout and stderr."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        peak = 0
        status = Path(f"/proc/{child.pid}/status")
        while child.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        peak = max(peak, int(line.split()[1]) * 1024)  # kB
            except (FileNotFoundError, ProcessLookupError):  # exited between poll() and the read
                break
            if time.perf_counter() - started > timeout:
                child.kill()
                child.wait()
                break
            time.sleep(0.001)
        code = child.wait()
        out.seek(0)
        err.seek(0)
        return {
            "returncode": code,
            "peak_anon_bytes": peak,
            "seconds": time.perf_counter() - started,
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }


def write_corpus(directory: Path, tokens: int, seed: int = 0) -> Path:
    """Random documents (mean length 200) in shards of SHARD_TOKENS, with a meta.json like prepare's."""
    from tokenbounds.data.shards import write_meta

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = []
    for k, start in enumerate(range(0, tokens, SHARD_TOKENS)):
        n = min(SHARD_TOKENS, tokens - start)
        shard = rng.integers(0, EOT, size=n, dtype=np.uint16)
        shard[rng.random(n) < 1 / 200] = EOT
        name = f"shard_{k:05d}.bin"
        shard.tofile(directory / name)
        entries.append({"file": name, "tokens": n, "max_token_id": int(shard.max())})
    meta = {"dtype": "uint16", "vocab_size": VOCAB, "eot": EOT, "tokenizer": "random", "n_tokens": tokens}
    write_meta(directory, {**meta, "max_token_id": max(e["max_token_id"] for e in entries), "shards": entries})
    return directory


def write_model(directory: Path, context: int) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=context, bos_token_id=EOT, eos_token_id=EOT
    )
    GPT2LMHeadModel(config).save_pretrained(directory, safe_serialization=True)
    return directory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e6,1e7", help="corpus sizes m in tokens")
    ap.add_argument("--context", type=int, default=128, help="block size (--context; stride = context)")
    ap.add_argument("--method", default="lotfi", help="lotfi (fast) or eb (adds entropies and top-k per token)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = write_model(Path(tmp) / "model", args.context)
        for m in sizes:
            data = write_corpus(Path(tmp) / f"corpus_{m}", m)
            command = [sys.executable, "-m", "tokenbounds", "bound", "--model", str(model), "--data", str(data)]
            command += ["--mode", "exhaustive", "--rule", "block", "--context", str(args.context)]
            command += ["--method", args.method, "--message-bits", "2000", "--no-progress"]
            run = peak_anon_rss(command, env)
            if run["returncode"] != 0:
                sys.exit(f"bound failed at m = {m}:\n{run['stderr'][-2000:]}")
            rows.append({"tokens": m, "peak_anon_mb": run["peak_anon_bytes"] / 1e6, "seconds": run["seconds"]})
            print(f"m = {m:>12,}: peak anonymous RSS {rows[-1]['peak_anon_mb']:8.1f} MB ({run['seconds']:.0f} s)")
    first, last = rows[0], rows[-1]
    growth = (last["peak_anon_mb"] - first["peak_anon_mb"]) * 1e6 / max(last["tokens"] - first["tokens"], 1)
    print(f"growth between m = {first['tokens']:,} and {last['tokens']:,}: {growth:.1f} bytes per token")
    summary = {"method": args.method, "context": args.context, "vocab_size": VOCAB, "rows": rows}
    summary["growth_bytes_per_token"] = growth
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
