"""`tokenbounds prepare`: text / jsonl / parquet files (compressed or not) -> token shards with meta.json.

Flags come from PrepareConfig; the tokenizers (transformers, torch) are imported in `run`.
"""

from dataclasses import dataclass
from pathlib import Path

from tokenbounds.config import add_flags, flag, parse_config


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    files: tuple[str, ...] = flag(
        help=".txt (one document), .jsonl (one per line) or .parquet (one per row) files, each may be .gz, .xz, "
        ".bz2 or .zst compressed (not .parquet)",
        metavar="FILE",
        positional=True,
    )
    tokenizer: str = flag(
        help="a local Hugging Face model directory, a tokenizer.json, a .gguf file (its embedded tokenizer), or "
        "'bytes' for the byte-level tokenizer (ids 0-255, eot 256; depends on no data)",
        metavar="PATH",
    )
    out: str = flag(help="output directory (must not exist, or be empty)", metavar="DIR")
    text_key: str = flag("text", help="jsonl field / parquet column holding the document text", metavar="KEY")
    ids_key: str | None = flag(
        None,
        help="read pre-tokenized records: the jsonl field / parquet column holding a list of token ids, concatenated "
        "as given (checked against the tokenizer's vocabulary)",
        metavar="KEY",
        default_text="none: tokenize text",
    )
    append_eot: bool = flag(False, help="with --ids-key: append the eot after every record")
    workers: int = flag(1, help="tokenizer processes (the shards are the same bytes for any number)", metavar="N")
    eot: int | None = flag(None, help="end-of-text id", metavar="ID", default_text="the tokenizer's eos")
    shard_tokens: int = flag(100_000_000, help="tokens per shard file", metavar="N")
    progress: bool = flag(True, help="hide the progress bar", name="--no-progress")


def add_parser(sub):
    p = sub.add_parser(
        "prepare",
        help="tokenize text / jsonl / parquet files into token shards",
        description="Tokenize text files (one document each), jsonl files (one document per line) or parquet files "
        "(one per row), compressed or not, in --workers processes, into memory-mappable token shards, appending the "
        "end-of-text token after every document, and write meta.json (dtype, vocabulary size, eot id, tokenizer, "
        "per-shard token counts and sha256, sha256 of the sources). With --ids-key, records already tokenized are "
        "concatenated as given (an eot after each only with --append-eot).",
    )
    return add_flags(p, PrepareConfig)


def run(args) -> int:
    import json

    from tokenbounds.data.bytes_tokenizer import ByteTokenizer
    from tokenbounds.data.prepare import check_inputs, prepare
    from tokenbounds.models.hf import load_tokenizer

    cfg, _ = parse_config(PrepareConfig, args)
    check_inputs(
        [Path(f) for f in cfg.files],
        Path(cfg.out),
        cfg.shard_tokens,
        cfg.workers,
        cfg.text_key,
        cfg.ids_key,
        cfg.append_eot,
    )
    tokenizer = ByteTokenizer() if cfg.tokenizer == "bytes" else load_tokenizer(cfg.tokenizer)
    meta = prepare(
        list(cfg.files),
        tokenizer,
        cfg.out,
        tokenizer_name="bytes" if cfg.tokenizer == "bytes" else str(Path(cfg.tokenizer).resolve()),
        text_key=cfg.text_key,
        shard_tokens=cfg.shard_tokens,
        eot=cfg.eot,
        progress=cfg.progress,
        workers=cfg.workers,
        ids_key=cfg.ids_key,
        append_eot=cfg.append_eot,
    )
    summary = {k: meta[k] for k in ("n_tokens", "vocab_size", "eot", "dtype")}
    print(f"wrote {len(meta['shards'])} shard(s) to {cfg.out}: {json.dumps(summary)}")
    return 0
