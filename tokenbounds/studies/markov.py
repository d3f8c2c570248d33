"""The Markov study: k-th order Markov chains against GPTs whose context is restricted to k tokens, for one k grid.

"Context k" means one thing for both models and for their bounds: the document rule with L = k, the previous <= k
tokens since the last eot (tokenbounds.data.units). Every row is the same bound: eb, token mode (one sampled token
per unit, the document rule with L = max(k, 1)), betting UCB, on the training corpus.

    markov-kK   the chain of order k counted from the training shards (tokenbounds.models.markov), additive
                smoothing with the pseudo-count fixed in the configuration, priced by its coded count table
    gpt-kK      a GPT with k positions (arch context k), trained on windows of k + 1 tokens (each target sees <= k
                tokens before it; a training window may cross an eot, a bound's context never does), quantized
                at `levels` k-means levels and priced by its coded message; evaluated under the document rule with
                L = k, so no prediction sees more than k tokens (k >= 1: a GPT that sees nothing is a unigram
                table, the order-0 chain)

Every order's memory estimate is checked against `max_memory` before any row runs (tokenbounds.data.ngrams). Builders
are idempotent: a chain or a quantized model is written under a temporary name and renamed when complete; a GPT
training resumes from its checkpoint.
"""

import json
import lzma
import shutil
from dataclasses import asdict
from pathlib import Path

from tokenbounds.data.bytes_tokenizer import ByteTokenizer
from tokenbounds.data.embedded import shakespeare_path
from tokenbounds.data.ngrams import check_memory
from tokenbounds.data.prepare import prepare
from tokenbounds.data.shards import open_corpus
from tokenbounds.errors import UserError
from tokenbounds.models.gpt import GPTConfig
from tokenbounds.models.groups import PARAMETRIZATIONS
from tokenbounds.models.markov import MANIFEST, write_markov
from tokenbounds.models.parametrization import make_spec
from tokenbounds.pipeline import BoundRequest
from tokenbounds.studies.building import quantized_model, trained_model
from tokenbounds.studies.markov_sizes import MODELS, MarkovConfig
from tokenbounds.studies.plots import Plot
from tokenbounds.studies.runner import Row, RowBuild, Study
from tokenbounds.train.trainer import TrainConfig

PLOTS = (Plot("context", "k", "context length k (tokens since the last eot)", series="model"),)


def data_dir(cfg: MarkovConfig, out: Path) -> Path:
    return Path(cfg.data) if cfg.data is not None else out / "data"


def setup(cfg: MarkovConfig, max_memory: int):
    """The corpus (the embedded Shakespeare as bytes in out/data unless cfg.data names one), then every chain's
    memory estimate against `max_memory`: a too-large order is refused before any row runs."""

    def run(out: Path) -> None:
        data = data_dir(cfg, out)
        if cfg.data is None and not (data / "meta.json").is_file():
            if data.exists():
                shutil.rmtree(data)  # an interrupted prepare of this study's own
            source = shakespeare_path()
            if cfg.works is not None:  # the first works only (one JSON line each)
                with lzma.open(source, "rt", encoding="utf-8") as lines:
                    head = [line for _, line in zip(range(cfg.works), lines, strict=False)]
                source = out / f"shakespeare-first-{cfg.works}.jsonl"
                source.write_text("".join(head), encoding="utf-8")
            prepare([source], ByteTokenizer(), data, tokenizer_name="bytes", progress=False)
        corpus = open_corpus(data)
        vocab = corpus.vocab_size or corpus.scan_max_id() + 1
        if "markov" in cfg.models:
            for order in cfg.orders:
                check_memory(corpus, order, vocab, max_memory)

    return run


def _request(cfg: MarkovConfig, out: Path, model: Path, context: int) -> BoundRequest:
    return BoundRequest(
        model=str(model),
        data=str(data_dir(cfg, out)),
        method="eb",
        mode="token",
        subsample_ucb="betting",
        samples=cfg.samples,
        context=context,
        delta=cfg.delta,
        seed=cfg.seed,
        progress=False,
    )


def _markov_row(cfg: MarkovConfig, order: int, max_memory: int):
    def build(out: Path) -> RowBuild:
        target = out / "markov" / f"k{order}"
        if not (target / MANIFEST).is_file():
            write_markov(open_corpus(data_dir(cfg, out)), order, cfg.pseudo_count, target, max_memory)
        manifest = json.loads((target / MANIFEST).read_text())
        facts = {"grams": manifest["n_grams"], "contexts": manifest["n_contexts"]}
        facts["message_bits_per_entry"] = manifest["bits_per_gram"]
        return RowBuild(_request(cfg, out, target, max(order, 1)), facts)

    return Row(f"markov-k{order}", "context", f"markov k={order}", {"k": order, "model": "markov"}, build)


def _train(cfg: MarkovConfig, out: Path, order: int) -> tuple[Path, dict]:
    """models/kK: the GPT with k positions, trained (resumed from its checkpoint when one is there)."""
    corpus = open_corpus(data_dir(cfg, out))
    vocab = corpus.vocab_size or corpus.scan_max_id() + 1
    arch = GPTConfig(vocab, context=order, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=0.0)
    spec = make_spec(arch, PARAMETRIZATIONS[cfg.param], init_seed=cfg.seed)
    train_cfg = TrainConfig(
        steps=cfg.steps,
        batch_size=-(-cfg.tokens_per_step // order),  # windows of k + 1 tokens: k targets each
        warmup=min(cfg.warmup, cfg.steps),
        eval_every=cfg.steps,
        checkpoint_every=max(cfg.steps // 4, 1),
        seed=cfg.seed,
    )
    trained = trained_model(out / "models" / f"k{order}", spec, train_cfg, data_dir(cfg, out))
    return trained["dir"], {"train_seconds": trained["seconds"]}


def _gpt_row(cfg: MarkovConfig, order: int):
    def build(out: Path) -> RowBuild:
        model_dir, seconds = _train(cfg, out, order)
        target, manifest = quantized_model(out / "quantized" / f"k{order}", model_dir, levels=cfg.levels, kmeans=True)
        facts = {"free_parameters": manifest["n_parameters"]}
        facts["message_bits_per_entry"] = manifest["bits_per_parameter"]
        return RowBuild(_request(cfg, out, target, order), facts, seconds)

    return Row(f"gpt-k{order}", "context", f"gpt k={order}", {"k": order, "model": "gpt"}, build)


def markov_study(cfg: MarkovConfig, size: str, max_memory: int, extra_bits: float = 0.0) -> Study:
    """The study's rows for `cfg`: every chain (k ascending), then every GPT (k >= 1, ascending)."""
    if not cfg.orders or min(cfg.orders) < 0 or len(set(cfg.orders)) != len(cfg.orders):
        raise UserError(f"--orders {','.join(map(str, cfg.orders))}: give distinct orders k >= 0")
    if not cfg.models or set(cfg.models) - set(MODELS):
        raise UserError(f"--models {','.join(cfg.models)}: give some of {', '.join(MODELS)}")
    if not cfg.pseudo_count > 0:
        raise UserError(f"--pseudo-count must be > 0, got {cfg.pseudo_count}")
    orders = sorted(cfg.orders)
    rows = []
    if "markov" in cfg.models:
        rows += [_markov_row(cfg, k, max_memory) for k in orders]
    if "gpt" in cfg.models:
        rows += [_gpt_row(cfg, k) for k in orders if k >= 1]
    if not rows:
        raise UserError("no rows: a GPT needs an order k >= 1")
    config = {"size": size, **asdict(cfg)}
    return Study("markov", config, rows, extra_bits=extra_bits, setup=setup(cfg, max_memory), plots=PLOTS)
