"""`tokenbounds quantize MODEL --levels L --out DIR`: quantize a model's weights into a priced, loadable directory."""

import argparse

from tokenbounds.compress.model import quantize_model
from tokenbounds.errors import UserError
from tokenbounds.streams import check_seed


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "quantize",
        help="quantize a model to a codebook of L levels, arithmetic-code it, and write a decodable model directory",
        description="Quantize a model's weights to codebooks of L float16 values (uniform bins or k-means), "
        "arithmetic-code the symbols with their empirical frequencies (constriction), and write DIR: the coded "
        "message (its length in bits is the prior's message length), a manifest, config.json, tokenizer files and "
        "the decoded weights as model.safetensors, so DIR is a Hugging Face model directory holding exactly the "
        "model the message describes. `bound` on DIR evaluates that decoded model and reads the message bits.",
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        help="a Hugging Face model directory, a .gguf file, or a directory from `tokenbounds train`; refused, as by "
        "`bound`, when its checkpoint does not fill the architecture exactly",
    )
    p.add_argument("--levels", type=int, required=True, help="codebook size L (>= 2): at most L distinct values")
    p.add_argument("--kmeans", action="store_true", help="k-means centroids instead of L uniform bins over [min, max]")
    p.add_argument(
        "--tensors",
        metavar="REGEX",
        help="quantize the floating tensors whose name matches REGEX (default: every weight matrix, i.e. every "
        "floating tensor with >= 2 dimensions); the others are stored raw and paid for",
    )
    p.add_argument(
        "--shared-codebook",
        action="store_true",
        help="one codebook for all quantized tensors (default: one per tensor)",
    )
    p.add_argument(
        "--unquantized-dtype",
        choices=("float16", "float32"),
        default="float16",
        help="how floating tensors left unquantized (norms, biases) are stored in the message (default: %(default)s)",
    )
    p.add_argument(
        "--configs-tried",
        type=int,
        default=1,
        metavar="K",
        help="how many quantization configurations (levels, k-means or not, QAT steps, patterns) you tried before "
        "keeping this one; the bound pays log2 K extra bits (default: %(default)s)",
    )
    p.add_argument(
        "--qat-steps",
        type=int,
        default=0,
        metavar="N",
        help="refine the codebook centroids for N Adam steps on random windows of --data (assignments fixed)",
    )
    p.add_argument("--data", metavar="SHARDS", help="training token shards (a `prepare` directory) for --qat-steps")
    p.add_argument("--dtype", choices=("uint16", "uint32"), help="token dtype when --data is a raw .bin file")
    p.add_argument("--eot", type=int, help="end-of-text token id when --data is a raw .bin file")
    p.add_argument(
        "--qat-ste",
        action="store_true",
        help="also move weights between centroids: latent weights trained with the straight-through estimator",
    )
    p.add_argument("--qat-lr", type=float, default=1e-4, help="learning rate of the centroids (default: %(default)s)")
    p.add_argument("--qat-batch", type=int, default=8, help="windows per QAT step (default: %(default)s)")
    p.add_argument("--qat-length", type=int, default=128, help="tokens per QAT window (default: %(default)s)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the QAT windows; they come from their own stream of it, independent of the trainer's and the "
        "bound's with the same seed (default: %(default)s)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must not exist or be empty)")
    p.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    if args.data and not args.qat_steps:
        raise UserError("--data is only used with --qat-steps")
    check_seed(args.seed)  # before loading the model
    m = quantize_model(
        args.model,
        args.out,
        levels=args.levels,
        kmeans=args.kmeans,
        tensors=args.tensors,
        shared_codebook=args.shared_codebook,
        unquantized_dtype=args.unquantized_dtype,
        configs_tried=args.configs_tried,
        qat_steps=args.qat_steps,
        data=args.data,
        data_dtype=args.dtype,
        data_eot=args.eot,
        qat_options={
            "lr": args.qat_lr,
            "batch_size": args.qat_batch,
            "length": args.qat_length,
            "seed": args.seed,
            "ste": args.qat_ste,
        },
        progress=not args.no_progress,
    )
    b = m["breakdown"]
    print(f"quantized {m['source']['path']} -> {args.out}")
    print(
        f"levels {m['levels']} ({'k-means' if m['kmeans'] else 'uniform'}), "
        f"{len(m['quantized_tensors'])} tensors quantized ({m['n_quantized']:,} values), "
        f"{len(m['raw_tensors'])} raw, {len(m['tied_tensors'])} tied"
    )
    print(
        f"message: {m['message_bits']:,} bits = {m['bits_per_parameter']:.4f} bits/parameter over "
        f"{m['n_parameters']:,} parameters; extra bits {m['extra_bits']:.3f}"
    )
    print(
        f"  coded symbols {b['coded_symbols_bits']:,} (entropy {m['entropy_bits']:,.0f}), header {b['header_bits']:,}, "
        f"raw tensors {b['raw_bits']:,}, container {b['container_bits']:,}"
    )
    if m["qat"]:
        q = m["qat"]
        print(
            f"QAT: {q['steps']} steps, eval-batch loss {q['eval_batch_loss_before_nats']:.4f} -> "
            f"{q['eval_batch_loss_after_nats']:.4f} nats/token"
        )
    return 0
