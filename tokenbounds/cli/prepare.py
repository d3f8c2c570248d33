"""`tokenbounds prepare`: text / jsonl files -> token shards with meta.json."""

import json
from pathlib import Path

from tokenbounds.data.bytes_tokenizer import ByteTokenizer
from tokenbounds.data.prepare import check_inputs, prepare
from tokenbounds.models.hf import load_tokenizer


def add_parser(sub):
    p = sub.add_parser(
        "prepare",
        help="tokenize text / jsonl files into token shards",
        description="Tokenize text files (one document each) or jsonl files (one document per line) into "
        "memory-mappable token shards, appending the end-of-text token after every document, and write "
        "meta.json (dtype, vocabulary size, eot id, tokenizer, per-shard token counts, sha256 of the sources).",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help=".txt (one document) or .jsonl (one per line) files")
    p.add_argument(
        "--tokenizer",
        required=True,
        metavar="PATH",
        help="a local Hugging Face model directory, a tokenizer.json, a .gguf file (its embedded tokenizer), or "
        "'bytes' for the byte-level tokenizer (ids 0-255, eot 256; depends on no data)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must not exist, or be empty)")
    p.add_argument("--text-key", default="text", help="jsonl field holding the document text (default: text)")
    p.add_argument("--eot", type=int, default=None, metavar="ID", help="end-of-text id (default: the tokenizer's eos)")
    p.add_argument(
        "--shard-tokens", type=int, default=100_000_000, metavar="N", help="tokens per shard file (default 1e8)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def run(args) -> int:
    check_inputs([Path(f) for f in args.files], Path(args.out), args.shard_tokens)
    tokenizer = ByteTokenizer() if args.tokenizer == "bytes" else load_tokenizer(args.tokenizer)
    meta = prepare(
        args.files,
        tokenizer,
        args.out,
        tokenizer_name="bytes" if args.tokenizer == "bytes" else str(Path(args.tokenizer).resolve()),
        text_key=args.text_key,
        shard_tokens=args.shard_tokens,
        eot=args.eot,
        progress=not args.no_progress,
    )
    summary = {k: meta[k] for k in ("n_tokens", "vocab_size", "eot", "dtype")}
    print(f"wrote {len(meta['shards'])} shard(s) to {args.out}: {json.dumps(summary)}")
    return 0
