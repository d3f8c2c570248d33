"""Scoring throughput and peak memory: tokenbounds' scorer against a plain transformers loop, same tokens.

Each measurement runs in its own process, so peak resident memory (ru_maxrss) belongs to it alone.
Workloads at context L over the first `--windows` aligned windows of the corpus:
  * full windows: every position of each L-token window scored (what exhaustive / block scoring does);
  * token mode:   one target per L-token context (the paper's sampler), where the scorer computes the head
                  only at the target position and the plain loop computes it everywhere.

    python scripts/bench_score.py --model SmolLM2-135M-Instruct.Q4_1.gguf --data shards/ --context 1024
"""

import argparse
import json
import multiprocessing as mp
import resource
import time

import numpy as np


def _windows(data: str, context: int, n: int) -> np.ndarray:
    from tokenbounds.data.shards import open_corpus

    corpus = open_corpus(data)
    shard = np.asarray(corpus.shards[0])
    count = min(n, (len(shard) - 1) // context)
    if count < 1:
        raise SystemExit(f"the first shard holds fewer than {context + 1} tokens")
    return np.stack([shard[i * context : i * context + context + 1].astype(np.int64) for i in range(count)])


def _measure(kind: str, workload: str, args, queue) -> None:
    import torch

    from tokenbounds.data.units import Unit
    from tokenbounds.models.hf import load_model
    from tokenbounds.models.scorer import score_units

    torch.set_num_threads(args.threads)
    model = load_model(args.model, args.compute_dtype)
    windows = _windows(args.data, args.context, args.windows)
    first = 1 if workload == "full" else args.context
    scored = windows.shape[0] * (args.context + 1 - first)
    start = time.perf_counter()
    if kind == "tokenbounds":
        units = [Unit(w, first, np.arange(first, len(w))) for w in windows]
        logp = score_units(model, units, progress=False).logp
    else:  # the plain loop: one window at a time, full logits, log_softmax, gather
        out = []
        with torch.no_grad():
            for w in windows:
                ids = torch.from_numpy(w[None, :-1])
                logits = model.model(input_ids=ids).logits[0, first - 1 :].float()
                target = torch.from_numpy(w[first:])
                out.append(torch.log_softmax(logits, -1).gather(1, target[:, None])[:, 0])
        logp = torch.cat(out).numpy()
    seconds = time.perf_counter() - start
    queue.put(
        {
            "scorer": kind,
            "workload": workload,
            "compute_dtype": args.compute_dtype,
            "windows": int(windows.shape[0]),
            "input_tokens": int(windows.shape[0] * args.context),
            "scored_targets": int(scored),
            "seconds": seconds,
            "input_tokens_per_second": windows.shape[0] * args.context / seconds,
            "scored_targets_per_second": scored / seconds,
            "mean_bits_per_token": float(-np.mean(logp) / np.log(2)),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory or .gguf file")
    parser.add_argument("--data", required=True, help="shard directory from `tokenbounds prepare`")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--windows", type=int, default=8, help="number of L-token windows per measurement")
    parser.add_argument("--compute-dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workloads", default="full,token")
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args()

    results = []
    ctx = mp.get_context("spawn")
    for workload in args.workloads.split(","):
        for kind in ("plain-transformers", "tokenbounds"):
            queue = ctx.Queue()
            process = ctx.Process(target=_measure, args=(kind, workload, args, queue))
            process.start()
            results.append(queue.get())
            process.join()
            r = results[-1]
            print(
                f"{r['workload']:>5} {r['scorer']:>18} {r['compute_dtype']:>8}: "
                f"{r['input_tokens_per_second']:8.1f} input tokens/s, {r['scored_targets_per_second']:8.2f} targets/s, "
                f"{r['mean_bits_per_token']:.4f} bits/token, peak RSS {r['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"args": vars(args), "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
