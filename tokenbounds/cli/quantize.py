"""`tokenbounds quantize MODEL --levels L --out DIR`: quantize a model's weights into a priced, loadable directory.

Flags come from QuantizeConfig; the model code (and torch) is imported in `run`.
"""

import argparse
from dataclasses import dataclass

from tokenbounds.config import add_flags, flag, parse_config
from tokenbounds.errors import UserError


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig:
    model: str = flag(
        help="a Hugging Face model directory, a .gguf file, or a directory from `tokenbounds train`; refused, as by "
        "`bound`, when its checkpoint does not fill the architecture exactly",
        metavar="MODEL",
        positional=True,
    )
    levels: int = flag(help="codebook size L (>= 2): at most L distinct values", metavar="L")
    kmeans: bool = flag(False, help="k-means centroids instead of L uniform bins over [min, max]")
    tensors: str | None = flag(
        None,
        help="quantize the floating tensors whose name matches REGEX; the others are stored raw and paid for",
        metavar="REGEX",
        default_text="every weight matrix, i.e. every floating tensor with >= 2 dimensions",
    )
    shared_codebook: bool = flag(False, help="one codebook for all quantized tensors (default: one per tensor)")
    unquantized_dtype: str = flag(
        "float16",
        help="how floating tensors left unquantized (norms, biases) are stored in the message",
        choices=("float16", "float32"),
    )
    configs_tried: int = flag(
        1,
        help="how many quantization configurations (levels, k-means or not, QAT steps, patterns) you tried before "
        "keeping this one; the bound pays log2 K extra bits",
        metavar="K",
    )
    qat_steps: int = flag(
        0,
        help="refine the codebook centroids for N Adam steps on random windows of --data (assignments fixed)",
        metavar="N",
    )
    data: str | None = flag(
        None,
        help="training token shards (a `prepare` directory) for --qat-steps",
        metavar="SHARDS",
        default_text="none",
    )
    dtype: str | None = flag(
        None,
        help="token dtype when --data is a raw .bin file",
        choices=("uint16", "uint32"),
        default_text="meta.json's",
    )
    eot: int | None = flag(
        None, help="end-of-text token id when --data is a raw .bin file", metavar="ID", default_text="meta.json's"
    )
    qat_ste: bool = flag(
        False, help="also move weights between centroids: latent weights trained with the straight-through estimator"
    )
    qat_lr: float = flag(1e-4, help="learning rate of the centroids", metavar="LR")
    qat_batch: int = flag(8, help="windows per QAT step", metavar="B")
    qat_length: int = flag(128, help="tokens per QAT window", metavar="T")
    seed: int = flag(
        0,
        help="seed of the QAT windows; they come from their own stream of it, independent of the trainer's and the "
        "bound's with the same seed",
    )
    out: str = flag(help="output directory (must not exist or be empty)", metavar="DIR")
    progress: bool = flag(True, help="do not show progress bars", name="--no-progress")


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
    return add_flags(p, QuantizeConfig)


def run(args: argparse.Namespace) -> int:
    from tokenbounds.compress.model import quantize_model
    from tokenbounds.streams import check_seed

    cfg, _ = parse_config(QuantizeConfig, args)
    if cfg.data and not cfg.qat_steps:
        raise UserError("--data is only used with --qat-steps")
    check_seed(cfg.seed)  # before loading the model
    m = quantize_model(
        cfg.model,
        cfg.out,
        levels=cfg.levels,
        kmeans=cfg.kmeans,
        tensors=cfg.tensors,
        shared_codebook=cfg.shared_codebook,
        unquantized_dtype=cfg.unquantized_dtype,
        configs_tried=cfg.configs_tried,
        qat_steps=cfg.qat_steps,
        data=cfg.data,
        data_dtype=cfg.dtype,
        data_eot=cfg.eot,
        qat_options={
            "lr": cfg.qat_lr,
            "batch_size": cfg.qat_batch,
            "length": cfg.qat_length,
            "seed": cfg.seed,
            "ste": cfg.qat_ste,
        },
        progress=cfg.progress,
    )
    b = m["breakdown"]
    print(f"quantized {m['source']['path']} -> {cfg.out}")
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
