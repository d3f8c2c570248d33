"""Scoring throughput, side by side on the same tokens in one process: where the time goes.

Over the first `--windows` aligned L-token windows of the corpus (every position scored). plain, lotfi and eb are
interleaved window by window, in a rotating order, `--repeats` times; each variant's time is the sum over the
windows of its minimum per window, so drift on a shared machine (runs here vary by several per cent within a minute)
falls on all three alike:

  * plain:        a transformers loop, one window at a time: full logits, log_softmax, gather;
  * lotfi:        tokenbounds' scorer, log-probability and rank only (what `--method lotfi` needs), each window
                  one batch, scored as a run scores its batches (logits and scratch in one reused workspace);
  * eb:           the same with every eb statistic (8 smoothed-entropy centrings, top-k masses: `--method eb`);
  * stats:        the statistics alone (lotfi's and eb's), timed on each window's fresh logits right after its
                  forward pass, as in the pipeline (median over the windows);
  * matmul:       torch.matmul at the model's own shapes (attention and MLP projections of every layer, and the
                  hidden x vocab head) for L tokens: the float32 ceiling in tokens/s, and each scorer's fraction;
  * token mode:   one target per context of <= L tokens at random positions (the paper's sampler): targets/s,
                  the fraction of padded tokens in the scorer's length-sorted batches, and the same units scored
                  one at a time (no padding at all) to measure what the padding still costs.

    python scripts/bench_score.py --model SmolLM2-135M-Instruct.Q4_1.gguf --data shards/ --windows 6 --context 1024
"""

import argparse
import json
import time

import numpy as np


def _windows(corpus, context: int, n: int) -> np.ndarray:
    shard = np.asarray(corpus.shards[0])
    count = min(n, (len(shard) - 1) // context)
    if count < 1:
        raise SystemExit(f"the first shard holds fewer than {context + 1} tokens")
    return np.stack([shard[i * context : i * context + context + 1].astype(np.int64) for i in range(count)])


def _matmul_shapes(config) -> list[tuple[int, int, int]]:
    """(in, out, count) of every weight matmul per token: the layers' projections and the head."""
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", heads) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    per_layer = [
        (hidden, heads * head_dim),  # q
        (hidden, kv * head_dim),  # k
        (hidden, kv * head_dim),  # v
        (heads * head_dim, hidden),  # o
        (hidden, inter),  # gate
        (hidden, inter),  # up
        (inter, hidden),  # down
    ]
    return [(i, o, layers) for i, o in per_layer] + [(hidden, config.vocab_size, 1)]


def _best(times: dict, name: str, seconds: float) -> None:
    times[name] = min(times.get(name, float("inf")), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory or .gguf file")
    parser.add_argument("--data", required=True, help="shard directory from `tokenbounds prepare`")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--windows", type=int, default=6, help="L-token windows scored at every position")
    parser.add_argument("--token-targets", type=int, default=8, help="token mode: targets (one per context)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the minimum is reported")
    parser.add_argument("--compute-dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args()

    import torch

    from tokenbounds.data.shards import open_corpus
    from tokenbounds.data.units import Unit, token_unit
    from tokenbounds.models.hf import load_model
    from tokenbounds.models.scorer import Workspace, _batches, _target_stats, plan_batches, score_batch, score_units
    from tokenbounds.request import DEFAULT_ALPHAS, DEFAULT_KS
    from tokenbounds.stats.centring import CENTRING

    torch.set_num_threads(args.threads)
    model = load_model(args.model, args.compute_dtype)
    corpus = open_corpus(args.data)
    windows = _windows(corpus, args.context, args.windows)
    n_win, L = windows.shape[0], args.context
    tokens = n_win * L
    units = [Unit(w, 1, np.arange(1, len(w))) for w in windows]
    alphas, ks = list(DEFAULT_ALPHAS), list(DEFAULT_KS)

    def plain(i: int) -> np.ndarray:
        w = windows[i]
        logits = model.model(input_ids=torch.from_numpy(w[None, :-1])).logits[0].float()
        return torch.log_softmax(logits, -1).gather(1, torch.from_numpy(w[1:])[:, None])[:, 0].numpy()

    # One batch per window, scored as the pipeline scores a run's batches: one workspace reused throughout.
    batches = [next(plan_batches([u], model.vocab_size)) for u in units]
    workspace = Workspace()

    def lotfi(i: int) -> np.ndarray:
        return score_batch(model, batches[i], workspace=workspace).logp

    def eb(i: int) -> np.ndarray:
        return score_batch(model, batches[i], alphas=alphas, ks=ks, workspace=workspace).logp

    def fresh_stats() -> dict[str, float]:
        """Each window's statistics on its own fresh logits (logits scored again and again read faster), the two
        variants in alternating order; the median over the windows."""
        spent: dict[str, list[float]] = {"stats lotfi": [], "stats eb": []}
        variants = [("stats lotfi", ([], [])), ("stats eb", (alphas, ks))]
        for i, w in enumerate(windows):
            z = model.logits(torch.from_numpy(w[None, :-1]), torch.arange(L))[0].float()
            targets = torch.from_numpy(w[1:])
            for name, stats in variants if i % 2 == 0 else variants[::-1]:
                start = time.perf_counter()
                _target_stats(z, targets, *stats, workspace)
                spent[name].append(time.perf_counter() - start)
        return {name: float(np.median(v)) for name, v in spent.items()}

    # Token mode: random positions, each its own context of <= L tokens under the document rule.
    rng = np.random.default_rng(0)
    token_units = [token_unit(corpus, int(p), L) for p in rng.integers(1, corpus.n_tokens, args.token_targets)]
    max_rows = max(1, (256 << 20) // (4 * model.vocab_size))
    real = padded = 0
    for batch in _batches(token_units, 8192, max_rows):
        lengths = [len(token_units[i].tokens) - 1 for i in batch]
        real, padded = real + sum(lengths), padded + len(lengths) * max(lengths)

    def token_sorted():
        return score_units(model, token_units, alphas=alphas, ks=ks, progress=False).logp

    alone = [next(plan_batches([u], model.vocab_size)) for u in token_units]

    def token_alone():  # one unit per forward pass: no padding at all
        return np.concatenate([score_batch(model, b, alphas=alphas, ks=ks, workspace=workspace).logp for b in alone])

    shapes = _matmul_shapes(model.model.config)
    weights = {(i, o): torch.randn(i, o) * 0.02 for i, o, _ in shapes}
    acts = {i: torch.randn(L, i) for i, _, _ in shapes}

    def matmul():
        for i, o, count in shapes:
            for _ in range(count):
                torch.matmul(acts[i], weights[(i, o)])

    times: dict[str, float] = {}
    bits: dict[str, float] = {}
    logps: dict[str, np.ndarray] = {}
    scorers = [("plain", plain), ("lotfi", lotfi), ("eb", eb)]
    per_window: dict[tuple[str, int], float] = {}
    outputs: dict[tuple[str, int], np.ndarray] = {}
    with torch.inference_mode():
        for repeat in range(args.repeats):
            for i in range(n_win):
                turn = (repeat * n_win + i) % len(scorers)
                for name, fn in scorers[turn:] + scorers[:turn]:
                    start = time.perf_counter()
                    outputs[name, i] = fn(i)
                    _best(per_window, (name, i), time.perf_counter() - start)
            for name, seconds in fresh_stats().items():
                _best(times, name, seconds)
            start = time.perf_counter()
            matmul()
            _best(times, "matmul", time.perf_counter() - start)
            for name, fn in [("token sorted", token_sorted), ("token alone", token_alone)]:
                start = time.perf_counter()
                logps[name] = fn()
                _best(times, name, time.perf_counter() - start)

    for name, _ in scorers:
        times[name] = sum(per_window[name, i] for i in range(n_win))
        logps[name] = np.concatenate([outputs[name, i] for i in range(n_win)])
        bits[name] = float(-np.mean(logps[name].astype(np.float64)) / np.log(2))
    flops = 2 * sum(i * o * c for i, o, c in shapes)  # per token
    ceiling = L / times["matmul"]
    rows = []
    for name in ("plain", "lotfi", "eb"):
        rate = tokens / times[name]
        rows.append(
            {"what": name, "tokens_per_s": rate, "ceiling_fraction": rate / ceiling, "bits_per_token": bits[name]}
        )
    for name in ("stats lotfi", "stats eb"):
        rows.append({"what": name + " (fresh logits)", "tokens_per_s": L / times[name]})
    rows.append({"what": "torch.matmul ceiling", "tokens_per_s": ceiling, "gflops": flops * ceiling / 1e9})
    n_targets = len(token_units)
    token_input = sum(len(u.tokens) - 1 for u in token_units)
    for name in ("token sorted", "token alone"):
        rows.append(
            {
                "what": name,
                "targets_per_s": n_targets / times[name],
                "input_tokens_per_s": token_input / times[name],
            }
        )

    print(f"{n_win} windows x {L} tokens, {args.compute_dtype}, {args.threads} threads, ", end="")
    print(f"per-window minimum of {args.repeats} interleaved repeats")
    for r in rows:
        line = f"{r['what']:>34}: "
        if "tokens_per_s" in r:
            line += f"{r['tokens_per_s']:9.1f} tokens/s"
        if "ceiling_fraction" in r:
            line += f"  {r['ceiling_fraction']:6.1%} of the matmul ceiling  {r['bits_per_token']:.6f} bits/token"
        if "gflops" in r:
            line += f"  ({r['gflops']:.1f} GFLOP/s, {flops / 1e6:.0f} MFLOP/token)"
        if "targets_per_s" in r:
            line += f"{r['targets_per_s']:9.3f} targets/s  {r['input_tokens_per_s']:8.1f} input tokens/s"
        print(line)
    print(f"eb / lotfi: {times['lotfi'] / times['eb']:.3f}x   eb / plain: {times['plain'] / times['eb']:.3f}x")
    for other in ("lotfi", "plain"):  # the spread says how far one run's verdict can be trusted
        ratios = [per_window[other, i] / per_window["eb", i] for i in range(n_win)]
        print(f"  eb / {other} per window: {min(ratios):.3f}x to {max(ratios):.3f}x (median {np.median(ratios):.3f}x)")
    print(f"statistics share of eb's time: {times['stats eb'] * n_win / times['eb']:.1%} (lotfi's: ", end="")
    print(f"{times['stats lotfi'] * n_win / times['lotfi']:.1%})")
    print(f"bits/token |eb - plain| = {abs(bits['eb'] - bits['plain']):.2e}, |lotfi - plain| = ", end="")
    print(f"{abs(bits['lotfi'] - bits['plain']):.2e}")
    print(
        f"token mode: {n_targets} targets, {token_input} input tokens, padded fraction of the sorted batches "
        f"{1 - real / padded:.1%}; sorted batches / one at a time: {times['token alone'] / times['token sorted']:.3f}x"
        f"; max |logp sorted - alone| {np.abs(logps['token sorted'] - logps['token alone']).max():.1e}"
    )
    print(f"centring: {CENTRING}")
    if args.json:
        with open(args.json, "w") as handle:
            per_window_seconds = {name: [per_window[name, i] for i in range(n_win)] for name, _ in scorers}
            report = {"args": vars(args), "results": rows, "seconds": times, "per_window_seconds": per_window_seconds}
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
