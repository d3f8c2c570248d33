"""`tokenbounds size PATH...`: how many bits it takes to describe a checkpoint (the prior's message length).

Flags come from SizeConfig; the codecs and the model backends (torch) are imported in `run`.
"""

import argparse
from dataclasses import dataclass
from pathlib import Path

from tokenbounds.compress.codec_table import DEFAULT_CODECS
from tokenbounds.config import add_flags, flag, parse_config
from tokenbounds.errors import UserError
from tokenbounds.report.io import check_writable, write_json


@dataclass(frozen=True, kw_only=True)
class SizeConfig:
    paths: tuple[str, ...] = flag(
        help="a model (a .gguf file, a Hugging Face directory, a directory from `tokenbounds train` or `quantize`: "
        "the files its backend prices), or checkpoint files priced exactly as given",
        metavar="PATH",
        positional=True,
    )
    codecs: tuple[str, ...] = flag(
        DEFAULT_CODECS,
        help="comma-separated codecs to try, each NAME or NAME:LEVEL (levels by default: gzip 6, xz 6, xz-mt 6 "
        "(xz -T0), zstd 19, brotli 9); every codec tried adds to the log2(number of codecs) extra bits",
        metavar="CODECS",
    )
    json: str | None = flag(
        None,
        help="also write the result as JSON to OUT (refused if OUT exists)",
        metavar="OUT",
        default_text="not written",
    )
    force: bool = flag(False, help="overwrite an existing --json file")
    progress: bool = flag(True, help="do not show the progress bar", name="--no-progress")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "size",
        help="message length in bits of checkpoint files under gzip (the paper's recipe), xz, zstd, brotli",
        description="Compress a checkpoint with several codecs and report its message length in bits (8 x compressed "
        "bytes). One file is compressed as is (gzip = `gzip -c FILE`); several files, or a model directory "
        "(config.json + weights), as a GNU tar archive (gzip = `tar -czf`). Reporting the shortest of K codecs costs "
        "log2 K extra bits in the bound.",
    )
    return add_flags(p, SizeConfig)


def format_table(result) -> str:
    rows = [("codec", "bytes", "bits", "bits/param", "", "method")]
    for codec, bits in result.codecs.items():
        bpp = result.bits_per_parameter(codec)
        rows.append(
            (
                codec,
                f"{bits // 8:,}",
                f"{bits:,}",
                f"{bpp:.4f}" if bpp is not None else "-",
                "best" if codec == result.best_codec else "",
                result.methods[codec],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in (1, 2, 3)] + [r[4].ljust(widths[4]), r[5]]
        lines.append("  ".join(cells).rstrip())
    params = f"{result.n_parameters:,}" if result.n_parameters is not None else "unknown"
    if result.packed_format is not None:
        stored = f"{result.n_stored_values:,}" if result.n_stored_values is not None else "unknown"
        params += f" (of the {result.packed_format} checkpoint's architecture; {stored} stored values)"
    head = [
        f"files: {', '.join(result.files)}",
        f"stream: {result.stream} ({result.stream_bytes:,} bytes uncompressed); parameters: {params}",
    ]
    tail = [
        f"best: {result.best_codec}, {result.best_bits:,} bits; choosing among {len(result.codecs)} codecs costs "
        f"{result.extra_bits:.3f} extra bits",
    ]
    if not any(Path(f).suffix in (".gguf", ".json") for f in result.files):
        tail.append("note: no config file priced; a decoder also needs the architecture (pass the model directory)")
    return "\n".join(head + lines + tail)


def run(args: argparse.Namespace) -> int:
    from tokenbounds.compress.codecs import measure_size
    from tokenbounds.compress.quantized_dir import MANIFEST, is_quantized_dir, read_manifest

    cfg, _ = parse_config(SizeConfig, args)
    if not cfg.codecs:
        raise UserError("--codecs is empty")
    check_writable(cfg.json, cfg.force)  # before compressing anything
    result = measure_size(list(cfg.paths), codecs=list(cfg.codecs), progress=cfg.progress)
    print(format_table(result))
    for path in cfg.paths:
        if is_quantized_dir(path):
            bits = read_manifest(path)["message_bits"]
            print(
                f"note: {path} is a quantized directory; its coded message is {bits:,} bits ({MANIFEST}), which is "
                "what `bound` uses as its prior"
            )
    if cfg.json:
        write_json(cfg.json, result.to_json())
    return 0
