"""`tokenbounds prepare`: text / jsonl files -> token shards with meta.json.

Flags come from PrepareConfig; the tokenizers (transformers, torch) are imported in `run`.
"""

from dataclasses import dataclass
from pathlib import Path

from tokenbounds.config import add_flags, flag, parse_config


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    files: tuple[str, ...] = flag(
        help=".txt (one document) or .jsonl (one per line) files", metavar="FILE", positional=True
    )
    tokenizer: str = flag(
        help="a local Hugging Face model directory, a tokenizer.json, a .gguf file (its embedded tokenizer), or "
        "'bytes' for the byte-level tokenizer (ids 0-255, eot 256; depends on no data)",
        metavar="PATH",
    )
    out: str = flag(help="output directory (must not exist, or be empty)", metavar="DIR")
    text_key: str = flag("text", help="jsonl field holding the document text", metavar="KEY")
    eot: int | None = flag(None, help="end-of-text id", metavar="ID", default_text="the tokenizer's eos")
    shard_tokens: int = flag(100_000_000, help="tokens per shard file", metavar="N")
    progress: bool = flag(True, help="hide the progress bar", name="--no-progress")


def add_parser(sub):
    p = sub.add_parser(
        "prepare",
        help="tokenize text / jsonl files into token shards",
        description="Tokenize text files (one document each) or jsonl files (one document per line) into "
        "memory-mappable token shards, appending the end-of-text token after every document, and write "
        "meta.json (dtype, vocabulary size, eot id, tokenizer, per-shard token counts, sha256 of the sources).",
    )
    return add_flags(p, PrepareConfig)


def run(args) -> int:
    import json

    from tokenbounds.data.bytes_tokenizer import ByteTokenizer
    from tokenbounds.data.prepare import check_inputs, prepare
    from tokenbounds.models.hf import load_tokenizer

    cfg, _ = parse_config(PrepareConfig, args)
    check_inputs([Path(f) for f in cfg.files], Path(cfg.out), cfg.shard_tokens)
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
    )
    summary = {k: meta[k] for k in ("n_tokens", "vocab_size", "eot", "dtype")}
    print(f"wrote {len(meta['shards'])} shard(s) to {cfg.out}: {json.dumps(summary)}")
    return 0
