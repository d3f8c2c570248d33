"""`tokenbounds train`: train a small GPT in a compressed parametrization on token shards."""

import argparse
import json
import math
from pathlib import Path

import torch

from tokenbounds.data.shards import open_corpus
from tokenbounds.errors import UserError
from tokenbounds.models.gpt import GPTConfig
from tokenbounds.models.parametrization import (
    GROUPS,
    KINDS_BY_GROUP,
    PARAMETRIZATIONS,
    SUBSPACE_BY_DEFAULT,
    canonical_group,
    make_spec,
)
from tokenbounds.train.trainer import TrainConfig, read_checkpoint_state, train

PARAMS = tuple(PARAMETRIZATIONS)
DEFAULT_LR = {"dense": 3e-3, "lora": 3e-3, "kronecker": 3e-3, "monarch": 3e-3}
SUBSPACE_LR = 1e-2  # for z of any subspace run (z steps move each parameter about as much as a dense step)
# Every flag defaults to None so that a resumed run can tell "not given" (take the checkpoint's) from "given".
DEFAULTS = {
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 128,
    "context": 128,
    "dropout": 0.0,
    "bias": False,
    "vocab_size": None,
    "param": "sublora",
    "groups": None,
    "rank": 4,
    "lora_alpha": None,
    "kron_factor": 4,
    "monarch_blocks": 16,
    "subspace_dim": None,
    "subspace_terms": 1,
    "init_seed": 0,
    "subspace_seed": 1,
    "lr": None,
    **{k: v for k, v in TrainConfig().to_dict().items() if k != "lr"},
}
SUBLORA_DIM = 10_000


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a small GPT (dense, LoRA, SubLoRA, Kronecker or Monarch) on token shards",
        description="Train the free parameters of a small GPT on token shards. The output directory holds spec.json "
        "(architecture, parametrization, seeds) and free_parameters.safetensors (the trained numbers only), which "
        "is what quantization codes and `bound` rebuilds the model from, plus a resumable checkpoint.",
    )
    p.add_argument("--data", required=True, help="training shards: a directory with meta.json, or a raw .bin file")
    p.add_argument("--val", help="held-out shards for the periodic evaluation (default: windows of the training data)")
    p.add_argument("--dtype", help="token dtype of a raw .bin file (uint16 or uint32)")
    p.add_argument("--eot", type=int, help="end-of-text id of a raw .bin file")
    p.add_argument("--out", required=True, help="output directory; must be new or empty unless --resume")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --out (flags not given are taken from it; flags given must agree with it)",
    )
    m = p.add_argument_group("model")
    m.add_argument("--n-layer", type=int, help=f"transformer blocks (default {DEFAULTS['n_layer']})")
    m.add_argument("--n-head", type=int, help=f"attention heads (default {DEFAULTS['n_head']})")
    m.add_argument("--n-embd", type=int, help=f"width of the residual stream (default {DEFAULTS['n_embd']})")
    m.add_argument("--context", type=int, help=f"tokens of context = training window (default {DEFAULTS['context']})")
    m.add_argument("--dropout", type=float, help="dropout probability while training (default 0)")
    m.add_argument("--bias", action="store_const", const=True, help="biases in linears and LayerNorms")
    m.add_argument("--vocab-size", type=int, help="output width V (default: the corpus tokenizer's vocabulary size)")
    c = p.add_argument_group("parametrization")
    c.add_argument(
        "--param",
        choices=PARAMS,
        help="the named parametrization (layer groups and kinds below); sublora = lora's groups (LoRA on attention, "
        "MLP and the tied embedding, norms dense) whose trainable numbers all live in a random subspace of dimension "
        "--subspace-dim, the quickstart's model (default sublora; before this release sublora trained dense embeddings "
        "and positions instead of LoRA on the embedding: --groups attn,mlp,embed=dense,pos,norm gives that back)",
    )
    c.add_argument(
        "--groups",
        help=f"layer groups to train, comma-separated, each GROUP or GROUP=KIND; groups: "
        f"{', '.join(GROUPS)} (head = embed: the tied token matrix); a bare group takes --param's kind "
        "where it allows it, else dense; others stay at their seeded initialisation (default per --param: "
        + "; ".join(f"{k}: {_groups_text(v)}" for k, v in PARAMETRIZATIONS.items())
        + ")",
    )
    c.add_argument("--rank", type=int, help=f"LoRA rank (default {DEFAULTS['rank']})")
    c.add_argument("--lora-alpha", type=float, help="LoRA scale numerator: update = alpha/rank * B A (default rank)")
    c.add_argument(
        "--kron-factor",
        type=int,
        help="Kronecker: W = U kron V with U k x k; k must divide the layer's "
        f"sizes (default {DEFAULTS['kron_factor']})",
    )
    c.add_argument(
        "--monarch-blocks",
        type=int,
        help="Monarch: number of diagonal blocks; must divide the layer's "
        f"sizes (default {DEFAULTS['monarch_blocks']})",
    )
    c.add_argument(
        "--subspace-dim",
        type=int,
        help=f"d: train only z in theta = theta_0 + sqrt(D/d) P z, P a seeded projection (default {SUBLORA_DIM:,} for "
        "sublora, none otherwise; any --param accepts it)",
    )
    c.add_argument("--subspace-terms", type=int, help="Kronecker products summed in the projection P (default 1)")
    c.add_argument("--init-seed", type=int, help="seed of theta_0, the initialisation (default 0)")
    c.add_argument("--subspace-seed", type=int, help="seed of the projection P (default 1)")
    t = p.add_argument_group("optimisation")
    t.add_argument("--steps", type=int, help=f"optimizer steps (default {DEFAULTS['steps']})")
    t.add_argument("--batch-size", type=int, help=f"windows per micro-batch (default {DEFAULTS['batch_size']})")
    t.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (default 1)")
    t.add_argument(
        "--lr",
        type=float,
        help=f"peak AdamW learning rate (default {SUBSPACE_LR:g} with a subspace, else "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
        + ")",
    )
    t.add_argument("--min-lr-ratio", type=float, help="final learning rate / peak (default 0.1)")
    t.add_argument("--warmup", type=int, help=f"linear warmup steps (default {DEFAULTS['warmup']})")
    t.add_argument("--weight-decay", type=float, help="AdamW decoupled weight decay on matrices (default 0)")
    t.add_argument("--grad-clip", type=float, help="max gradient norm, 0 = off (default 1)")
    t.add_argument("--eval-every", type=int, help=f"steps between evaluations (default {DEFAULTS['eval_every']})")
    t.add_argument("--eval-batches", type=int, help=f"batches per evaluation (default {DEFAULTS['eval_batches']})")
    t.add_argument(
        "--checkpoint-every",
        type=int,
        help=f"steps between checkpoints (default {DEFAULTS['checkpoint_every']}; the last step always saves)",
    )
    t.add_argument(
        "--seed",
        type=int,
        help="seed of the data order, the evaluation windows and dropout, each from its own stream of it, independent "
        "of the units `bound --seed` draws with the same seed (default 0)",
    )
    t.add_argument(
        "--bf16",
        action="store_const",
        const=True,
        help="bfloat16 autocast in the forward pass (fast on "
        "CPUs with AVX512-BF16 or AMX; parameters and optimizer stay float32)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _given(args) -> dict:
    return {k: getattr(args, k) for k in DEFAULTS if getattr(args, k, None) is not None}


def _groups_text(groups: dict[str, str]) -> str:
    return ",".join(f"{g}={k}" for g, k in groups.items())


def parse_groups(text: str, param: str) -> dict[str, str]:
    kind = PARAMETRIZATIONS[param]["attn"]  # the kind of the named parametrization's linears
    groups = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, explicit = item.partition("=")
        group = canonical_group(name.strip())
        if explicit:
            groups[group] = explicit.strip()
        else:
            groups[group] = kind if kind in KINDS_BY_GROUP[group] else "dense"
    if not groups:
        raise UserError("--groups names no layer group")
    return groups


def resolve(settings: dict, corpus_vocab: int) -> tuple[dict, TrainConfig]:
    """Flag values (with defaults filled) -> (model spec, training config)."""
    s = {**DEFAULTS, **settings}
    param = s["param"]
    if s["vocab_size"] is not None and s["vocab_size"] < corpus_vocab:
        raise UserError(f"--vocab-size {s['vocab_size']} is smaller than the corpus vocabulary {corpus_vocab}")
    arch = GPTConfig(
        vocab_size=s["vocab_size"] or corpus_vocab,
        context=s["context"],
        n_layer=s["n_layer"],
        n_head=s["n_head"],
        n_embd=s["n_embd"],
        dropout=s["dropout"],
        bias=s["bias"],
    )
    default_dim = SUBLORA_DIM if param in SUBSPACE_BY_DEFAULT else None
    dim = s["subspace_dim"] if s["subspace_dim"] is not None else default_dim
    spec = make_spec(
        arch,
        parse_groups(s["groups"], param) if s["groups"] else PARAMETRIZATIONS[param],
        init_seed=s["init_seed"],
        rank=s["rank"],
        lora_alpha=s["lora_alpha"],
        kron_factor=s["kron_factor"],
        monarch_blocks=s["monarch_blocks"],
        subspace_dim=dim,
        subspace_seed=s["subspace_seed"],
        subspace_terms=s["subspace_terms"],
    )
    cfg_values = {k: s[k] for k in TrainConfig().to_dict()}
    cfg_values["lr"] = s["lr"] if s["lr"] is not None else (SUBSPACE_LR if dim is not None else DEFAULT_LR[param])
    return spec, TrainConfig(**cfg_values)


def run(args) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    corpus = open_corpus(args.data, args.dtype, args.eot)
    val = open_corpus(args.val, args.dtype, args.eot) if args.val else None
    corpus_vocab = corpus.vocab_size if corpus.vocab_size is not None else corpus.scan_max_id() + 1
    out = Path(args.out)
    settings = _given(args)
    if args.resume:
        saved = read_checkpoint_state(out).get("settings", {})
        settings = {**saved, **settings}  # given flags win; a contradiction surfaces as a spec/config mismatch
    spec, cfg = resolve(settings, corpus_vocab)
    print(f"model spec: {json.dumps(spec, separators=(',', ':'))}")
    result = train(
        spec,
        cfg,
        corpus,
        out,
        val_corpus=val,
        resume=args.resume,
        progress=not args.no_progress,
        extra_state={"settings": settings},  # lets --resume rebuild the same spec and config from the directory
    )
    where = "held-out loss" if val is not None else "loss on training windows (no --val)"
    loss = "n/a" if result.val_loss is None else f"{result.val_loss / math.log(2):.4f} bits/token"
    print(
        f"trained {result.step} steps, {result.tokens:,} tokens in {result.seconds:.1f} s "
        f"({result.tokens / max(result.seconds, 1e-9):,.0f} tokens/s); {where} {loss}; wrote {out}"
    )
    return 0
