"""Quantize one model at several codebook sizes, uniform and k-means; print message bits and bits/parameter.

    python scripts/quantize_grid.py MODEL --levels 2,4,8,16 --out PREFIX [--json OUT]

MODEL is loaded once (a .gguf file is dequantized through transformers); every configuration is written to
PREFIX-L{levels}-{uniform|kmeans} by `quantize_model` (a verified, loadable directory the `bound` command can
evaluate) and its manifest is summarised. Lengths are in bits.
"""

import argparse
import json
import time

import numpy as np

from tokenbounds.compress.model import quantize_model
from tokenbounds.compress.quantized_dir import load_quantized
from tokenbounds.compress.source import Source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--levels", default="2,4,8,16")
    ap.add_argument("--out", required=True, help="prefix of the output directories")
    ap.add_argument("--json", help="write the summary rows here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    src = Source(args.model)
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s: {len(src.tensors)} tensors, ties {src.ties}")
    rows = []
    for levels in [int(v) for v in args.levels.split(",")]:
        for kmeans in (False, True):
            t0 = time.perf_counter()
            out = f"{args.out}-L{levels}-{'kmeans' if kmeans else 'uniform'}"
            m = quantize_model(src, out, levels=levels, kmeans=kmeans, progress=False)
            weights, _ = load_quantized(out)  # decode + verify, as `bound` will
            q = m["quantized_tensors"]
            err = sum(float(np.sum((weights[n] - src.tensors[n].astype(np.float32)) ** 2)) for n in q)
            ref = sum(float(np.sum(src.tensors[n].astype(np.float64) ** 2)) for n in q)
            row = {
                "levels": levels,
                "kmeans": kmeans,
                "message_bits": m["message_bits"],
                "bits_per_parameter": m["bits_per_parameter"],
                "entropy_bits": m["entropy_bits"],
                "coded_symbols_bits": m["breakdown"]["coded_symbols_bits"],
                "raw_bits": m["breakdown"]["raw_bits"],
                "header_bits": m["breakdown"]["header_bits"],
                "n_parameters": m["n_parameters"],
                "n_quantized": m["n_quantized"],
                "relative_rmse": (err / ref) ** 0.5,
                "seconds": round(time.perf_counter() - t0, 1),
                "dir": out,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("| levels | codebook | message bits | bits/param | coded symbols | raw (1-D, fp16) | header | rel. RMSE |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['levels']} | {'k-means' if r['kmeans'] else 'uniform'} | {r['message_bits']:,} | "
            f"{r['bits_per_parameter']:.4f} | {r['coded_symbols_bits']:,} | {r['raw_bits']:,} | {r['header_bits']:,} | "
            f"{r['relative_rmse']:.4f} |"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
