"""Token-level bounds next to the predecessor's document- and sequence-level IID bounds, on one model and corpus.

The model and corpus are the quickstart's (`tokenbounds quickstart --out DIR` writes DIR/quantized and DIR/data;
this script runs the quickstart into --quickstart when that directory does not exist yet). Every row is the same
decoded model, priced by its coded message plus the quickstart's extra bits, under one context length L:

    token      the paper's bound (lotfi, s tokens, Hoeffding) and eb (s tokens, betting), document rule: the
               conditional risk per token, m = tokens in the complexity term
    sequence   lotfi over aligned sequences of L tokens (block rule, stride L), n = sequences, assumed i.i.d.
    document   lotfi over whole documents (document rule, sliding windows beyond L), n = documents, assumed i.i.d.:
               the 42 plays and poems as prepared, and the same text split into 777 scenes (tokenbounds.data.embedded
               .write_scenes), the only way this corpus has more than 42 documents

Neither the plays nor the scenes nor the sequences are literally i.i.d. draws (scenes and sequences follow each other
in a play): the unit rows show what each bound gives under its assumption; the token rows assume none.
Each row is its own bound, holding with probability >= 1 - delta by itself (the rows are shown side by side, not
chosen among: picking the best one would cost log2(rows) more bits). Scoring a document exactly under the document
rule takes one model window per target beyond the first L, so document rows cost about L input tokens per token of
the documents drawn: on a CPU they are sized in documents, not tokens.

    python scripts/compare_units.py --quickstart runs/qs --out runs/compare
"""

import argparse
import json
import time
from pathlib import Path

from tokenbounds.data.bytes_tokenizer import ByteTokenizer
from tokenbounds.data.embedded import write_scenes
from tokenbounds.data.prepare import prepare
from tokenbounds.pipeline import BoundRequest, compute_bound
from tokenbounds.quickstart_config import QuickstartConfig


def rows(args) -> list[tuple[str, str, dict]]:
    """(label, corpus label, request fields) of every row, in table order."""
    token = {"unit": "token", "mode": "token", "samples": args.token_samples}
    return [
        ("token (paper: lotfi, hoeffding)", "plays", {**token, "method": "lotfi", "subsample_ucb": "hoeffding"}),
        ("token (eb, betting)", "plays", {**token, "method": "eb", "subsample_ucb": "betting"}),
        ("sequence (lotfi, hoeffding)", "plays", {"unit": "sequence", "samples": args.sequence_samples}),
        ("document (lotfi, hoeffding)", "scenes", {"unit": "document", "samples": args.scene_samples}),
        ("document (lotfi, hoeffding)", "plays", {"unit": "document", "samples": args.play_samples}),
    ]


def compare(args) -> list[dict]:
    qs = Path(args.quickstart)
    if not qs.exists():
        from tokenbounds.quickstart import run_quickstart

        qs.mkdir(parents=True)
        run_quickstart(qs, QuickstartConfig(out=str(qs)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scenes = out / "scenes-data"
    if not scenes.exists():  # the embedded text again, one document per scene
        prepare([write_scenes(out / "shakespeare-scenes.jsonl")], ByteTokenizer(), scenes, tokenizer_name="bytes")
    data, model = qs / "data", qs / "quantized"
    extra_bits = QuickstartConfig().extra_bits  # the developers' choice of the quickstart's settings
    results = []
    for label, corpus, fields in rows(args):
        fields.setdefault("method", "lotfi")
        fields.setdefault("subsample_ucb", "hoeffding")
        mode = fields.pop("mode", "block")
        req = BoundRequest(
            model=str(model),
            data=str(scenes if corpus == "scenes" else data),
            mode=mode,
            context=args.context,
            delta=args.delta,
            extra_bits=extra_bits,
            seed=args.seed,
            progress=not args.no_progress,
            **fields,
        )
        started = time.perf_counter()
        report = compute_bound(req)
        report["compare"] = {"label": label, "corpus": corpus, "seconds": time.perf_counter() - started}
        results.append(report)
        print(f"{label} on {corpus}: {report['best_bits_per_token']}", flush=True)
        (out / "compare_units.json").write_text(json.dumps(results, indent=1) + "\n")  # after every row
    return results


def table(results: list[dict]) -> str:
    head = "| unit (method, UCB) | documents | data points in the complexity term | drawn | empirical | complexity"
    head += " | subsampling | bound (bits) | best α | seconds |"
    lines = [head, "|" + "---|" * 10]
    for r in results:
        best = min((x for x in r["results"] if x["statistic"] == "bits_per_token"), key=lambda x: x["bound"])
        n = f"m = {r['n_tokens']:,} tokens" if r["unit"] == "token" else f"n = {r['n_units']:,} {r['unit']}s"
        clipped = "*" if best["clipped"] else ""
        lines.append(
            f"| {r['compare']['label']} | {r['compare']['corpus']} | {n} | {r['samples']:,} | "
            f"{best['empirical']:.3f} | {best['complexity_term']:.3f} | {best['subsampling_term']:.3f} | "
            f"{best['bound']:.3f}{clipped} | {best['alpha']:g} | {r['compare']['seconds']:.0f} |"
        )
    r = results[0]
    lines += [
        "",
        f"One model ({r['message_bits']:,.0f}-bit message + {r['extra_bits']:g} extra bits), context L = "
        f"{r['context']}, delta = {r['delta']:g} per row; log2 V = {r['log2_vocab']:.3f} bits. * clipped at the "
        "top of the loss range (vacuous). Token rows bound the mean over tokens of the conditional risk; sequence "
        "and document rows the expected mean loss of one i.i.d. unit (every unit weighs the same).",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quickstart", default="runs/quickstart", help="a quickstart output directory (run if missing)")
    p.add_argument("--out", default="runs/compare_units", help="where the scenes corpus and the JSON go")
    p.add_argument("--context", type=int, default=32, help="context length L of every row")
    p.add_argument("--token-samples", type=int, default=4000)
    p.add_argument("--sequence-samples", type=int, default=4000)
    p.add_argument("--scene-samples", type=int, default=4)
    p.add_argument("--play-samples", type=int, default=1)
    p.add_argument("--delta", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    print(table(compare(args)))


if __name__ == "__main__":
    main()
