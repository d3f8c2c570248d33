"""The memorization study: as post-training quantization coarsens a GPT, does it lose what it memorized before what it
inferred?

One dense GPT (every weight a free parameter) is trained on the corpus of `tokenbounds.data.sequences`: structured
records, which a rule completes, and keyed random records, which only memory completes. Its weight matrices are then
quantized at each of `levels` (uniform bins and k-means; one codebook per matrix, norm gains kept in float16) and
each quantized model, and the float32 model priced by `tar -czf` (as the compression study prices it), is one row:

    recall accuracy     greedy exact match of a random record's n values given KEY + its key (all random records
                        of the training corpus)
    pattern accuracy    greedy exact match of a held-out structured record's n values given PATTERN + its P values
    bits per parameter  the row's message bits / free parameters
    the token bound     eb + block sampling + betting on the training corpus (the hypothesis priced by its message)

Greedy exact match, with ties against the model: greedy decoding reproduces the continuation y_1..y_n exactly iff at
every step t, given the prompt and y_<t, y_t is the *unique* argmax of the logits (pessimistic rank 0,
`stats.topk.pessimistic_rank`). By induction: while the decoded prefix equals y_<t, the next decoded token is y_t iff
y_t is the unique top choice; a tie at the top counts as a miss (any tie-break could pick another token), and the
first miss ends the match. So one teacher-forced pass gives the exact greedy result, decoded token by token
(tests/test_memorization.py checks the two agree). Every evaluation input starts with eot, as a record starts after
its predecessor's eot in the corpus.

The finding tested (`half_points`): for each coding, the bits per parameter at which each accuracy first falls to
half its float32 value, walking down from float32 through decreasing levels, interpolated linearly in log2(bits per
parameter) between the last row above half and the first at or below it. Recall degrades faster than pattern
completion when its half-point lies at more bits per parameter. The accuracies are measured, not bounded: the recall
set is every random record of the corpus (exact for this model), the held-out set a sample of n_heldout records
(its accuracy an estimate of the population's). Only the token bounds are guarantees; each pays log2(rows) bits so
that the best may be reported.

Builders are idempotent, as in the compression study: the model resumes from its last checkpoint, a quantized
directory is written under a temporary name and renamed when complete, and the corpus is renamed into place whole.
"""

import json
import math
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from tokenbounds.compress.pricing import checkpoint_message_bits
from tokenbounds.data.sequences import SequenceConfig, read_eval, write_sequences
from tokenbounds.data.shards import open_corpus
from tokenbounds.errors import UserError
from tokenbounds.models.gpt import GPTConfig
from tokenbounds.models.groups import PARAMETRIZATIONS
from tokenbounds.models.parametrization import make_spec
from tokenbounds.stats.topk import pessimistic_rank
from tokenbounds.studies.building import block_bound, frozen_copy, quantized_model, trained_model
from tokenbounds.studies.memorization_sizes import MemorizationConfig
from tokenbounds.studies.plots import Plot
from tokenbounds.studies.runner import Row, RowBuild, Study
from tokenbounds.train.trainer import TrainConfig

GROUP = "levels"
PLOTS = (Plot(GROUP, "bits_per_parameter", "message bits per free parameter", series="coding", log_x=True),)
MATRICES = r"^(wte|wpe)\.weight$|\.(qkv|proj|fc)\.weight$"  # what is quantized; the norm gains stay float16
FLOAT32 = "float32 tar.gz"
CODINGS = ("uniform", "k-means")
ACCURACIES = ("recall", "pattern")
FINDING_FILE = "finding.json"
HALF_POINT_RULE = (
    "bits per parameter at which an accuracy first falls to half its float32 value, walking down from float32 "
    "through decreasing levels, interpolated linearly in log2(bits per parameter); recall degrades faster when its "
    "half-point lies at more bits per parameter"
)
EVAL_BATCH = 512


def sequence_config(cfg: MemorizationConfig) -> SequenceConfig:
    """The corpus generator's configuration: the study's fields of the same names (UserError when it is unusable)."""
    return SequenceConfig(**{f.name: getattr(cfg, f.name) for f in fields(SequenceConfig)})


def gpt_spec(cfg: MemorizationConfig) -> dict:
    seq = sequence_config(cfg)
    if cfg.context < seq.longest_record + 1:
        raise UserError(f"context {cfg.context} is shorter than eot + the longest record ({seq.longest_record + 1})")
    arch = GPTConfig(vocab_size=seq.vocab_size, context=cfg.context, n_layer=cfg.n_layer, n_head=cfg.n_head,
                     n_embd=cfg.n_embd, dropout=0.0)  # fmt: skip
    return make_spec(arch, PARAMETRIZATIONS["dense"], init_seed=cfg.seed)


def _setup(cfg: MemorizationConfig):
    def setup(out: Path) -> None:
        """The corpus in out/data (kept when there: write_sequences renames it into place complete)."""
        if not (out / "data" / "meta.json").is_file():
            write_sequences(sequence_config(cfg), out / "data")

    return setup


def _trained(out: Path, cfg: MemorizationConfig) -> dict:
    """models/dense trained for cfg.steps (resumed from its last checkpoint, or reused when finished)."""
    model_dir = out / "models" / "dense"
    train_cfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup=min(cfg.warmup, cfg.steps),
        eval_every=cfg.steps,
        checkpoint_every=max(cfg.steps // 4, 1),
        seed=cfg.seed,
        bf16=cfg.bf16,
    )
    return trained_model(model_dir, gpt_spec(cfg), train_cfg, out / "data")


def _quantized(out: Path, source: Path, levels: int, kmeans: bool) -> tuple[Path, dict]:
    """quantized/L<levels>-<coding>, written whole or not at all."""
    name = f"L{levels}-{'kmeans' if kmeans else 'uniform'}"
    return quantized_model(out / "quantized" / name, source, levels=levels, kmeans=kmeans, tensors=MATRICES)


def continuation_ranks(model, rows: np.ndarray, prompt: int, eot: int, batch: int = EVAL_BATCH) -> np.ndarray:
    """(n, T - prompt) pessimistic ranks of each record's continuation rows[:, prompt:], teacher-forced after eot.

    rows: (n, T) records without eot; the input is eot + the record, and position j's logits predict token j + 1.
    """
    import torch

    n, width = rows.shape
    inputs = np.concatenate([np.full((n, 1), eot, dtype=np.int64), rows.astype(np.int64)], axis=1)
    keep = torch.arange(prompt, width)  # positions whose logits predict rows[:, prompt:]
    ranks = []
    for start in range(0, n, batch):
        chunk = inputs[start : start + batch]
        logits = model.logits(torch.from_numpy(chunk[:, :width]), keep).numpy()
        if not np.all(np.isfinite(logits)):
            raise UserError("the model produced non-finite logits: its accuracy is undefined")
        ranks.append(pessimistic_rank(logits, chunk[:, prompt + 1 :]))
    return np.concatenate(ranks)


def greedy_exact(ranks: np.ndarray) -> np.ndarray:
    """Whether greedy decoding reproduces each continuation: every token the unique top choice (ties are misses)."""
    return np.all(np.asarray(ranks) == 0, axis=-1)


def accuracies(model_path: Path, data: Path) -> dict:
    """Recall and held-out pattern accuracy (exact match, and per token) of the hypothesis at `model_path`."""
    from tokenbounds.models.registry import open_model

    model = open_model(model_path, "float32", "cpu")  # the very hypothesis the row bounds (decoded, verified)
    evals, eot = read_eval(data), open_corpus(data).eot
    facts = {}
    for name, rows, prompt in (("recall", evals.recall, evals.recall_prompt),
                               ("pattern", evals.pattern, evals.pattern_prompt)):  # fmt: skip
        ranks = continuation_ranks(model, rows, prompt, eot)
        exact = greedy_exact(ranks)
        facts[f"{name}_accuracy"] = float(exact.mean())
        facts[f"{name}_token_accuracy"] = float(np.mean(ranks == 0))
        facts[f"{name}_records"] = len(exact)
    return facts


def _rows(cfg: MemorizationConfig) -> list[Row]:
    def float32(out):
        trained = _trained(out, cfg)
        model = frozen_copy(out / "float32" / "dense", trained["dir"])
        bits, info = checkpoint_message_bits(model, progress=False)
        facts = {"free_parameters": info["n_parameters"], "bits_per_parameter": bits / info["n_parameters"]}
        facts.update(accuracies(model, out / "data"))
        return RowBuild(
            block_bound(cfg, out, model, checkpoint_size=True), facts, {"train_seconds": trained["seconds"]}
        )

    def quantized(levels, kmeans):
        def row(out):
            target, manifest = _quantized(out, _trained(out, cfg)["dir"], levels, kmeans)
            facts = {"free_parameters": manifest["n_parameters"], "bits_per_parameter": manifest["bits_per_parameter"]}
            facts.update(accuracies(target, out / "data"))
            return RowBuild(block_bound(cfg, out, target), facts)

        return row

    rows = [Row("float32", GROUP, "float32, tar.gz", {"levels": None, "coding": FLOAT32}, float32)]
    for levels in sorted(set(cfg.levels), reverse=True):
        for kmeans, coding in zip((False, True), CODINGS, strict=True):
            key = f"L{levels}-{'kmeans' if kmeans else 'uniform'}"
            params = {"levels": levels, "coding": coding}
            rows.append(Row(key, GROUP, f"levels={levels} {coding}", params, quantized(levels, kmeans)))
    return rows


def memorization_study(cfg: MemorizationConfig, size: str, extra_bits: float = 0.0) -> Study:
    """The study's rows for `cfg`; UserError (before anything is written) when its corpus or model is unusable."""
    spec = gpt_spec(cfg)  # checks the corpus configuration (random and structured records) and the context
    arch = spec["arch"]
    smallest = min(arch["vocab_size"], arch["context"], arch["n_embd"]) * arch["n_embd"]  # entries of a matrix
    if not cfg.levels or min(cfg.levels) < 2 or max(cfg.levels) > smallest:
        raise UserError(f"levels must be integers from 2 to {smallest} (the smallest weight matrix), got {cfg.levels}")
    config = {"size": size, **asdict(cfg)}
    return Study("memorization", config, _rows(cfg), extra_bits=extra_bits, setup=_setup(cfg), plots=PLOTS)


def half_point(bits: np.ndarray, accuracy: np.ndarray, full: float) -> float | None:
    """Bits per parameter at which `accuracy` first falls to half of `full`, walking down `bits` (sorted descending,
    bits[0] the full-precision row, accuracy[0] == full); interpolated linearly in log2(bits) between the last point
    above half and the first at or below it. None when it stays above half down to the last point; NaN when full is
    0 (nothing to lose)."""
    bits, accuracy = np.asarray(bits, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
    if not np.all(np.diff(bits) < 0):
        raise ValueError("bits per parameter must be strictly decreasing")
    if not full > 0:
        return math.nan
    half = full / 2
    below = np.flatnonzero(accuracy <= half)
    if len(below) == 0:
        return None
    i = int(below[0])
    if i == 0:
        raise ValueError("the full-precision point cannot be at or below half of itself")
    a0, a1 = accuracy[i - 1], accuracy[i]
    x0, x1 = np.log2(bits[i - 1]), np.log2(bits[i])
    return float(2 ** (x0 + (a0 - half) / (a0 - a1) * (x1 - x0)))


def _chain(summary: dict, coding: str) -> list[dict]:
    """The rows of one coding, from the most bits per parameter to the fewest."""
    rows = [r for r in summary["results"] if r["params"]["coding"] == coding]
    return sorted(rows, key=lambda r: -r["facts"]["bits_per_parameter"])


def half_points(summary: dict) -> dict:
    """For each coding and accuracy: the float32 value, its half-point and whether recall falls to half first."""
    (full,) = _chain(summary, FLOAT32)
    out = {}
    for coding in CODINGS:
        chain = _chain(summary, coding)
        bits = [full["facts"]["bits_per_parameter"]] + [r["facts"]["bits_per_parameter"] for r in chain]
        entry = {}
        for name in ACCURACIES:
            key = f"{name}_accuracy"
            value = full["facts"][key]
            point = half_point(np.array(bits), np.array([value] + [r["facts"][key] for r in chain]), value)
            entry[name] = {"float32": value, "half_point_bits_per_parameter": point}
        entry["verdict"] = _verdict(entry, min(bits))
        out[coding] = entry
    return out


def _verdict(entry: dict, lowest: float) -> str:
    recall, pattern = (entry[n]["half_point_bits_per_parameter"] for n in ACCURACIES)
    if entry["recall"]["float32"] == 0 or entry["pattern"]["float32"] == 0:
        which = "recall" if entry["recall"]["float32"] == 0 else "pattern completion"
        return f"not testable: the float32 model's {which} accuracy is 0"
    if recall is None and pattern is None:
        return f"not testable: neither accuracy falls to half down to {lowest:.3g} bits per parameter"
    if pattern is None or (recall is not None and recall > pattern):
        return "reproduces: recall falls to half at more bits per parameter than pattern completion"
    if recall is None or pattern > recall:
        return "does not reproduce: pattern completion falls to half first"
    return "does not reproduce: both fall to half at the same bits per parameter"


def _format_point(point) -> str:
    if point is None:
        return "above half throughout"
    return "undefined" if math.isnan(point) else f"{point:.3g}"


def write_finding(summary: dict, out: str | Path) -> dict:
    """finding.json, a '## finding' section at the end of study.md, and plots/accuracy.png; returns the finding."""
    out = Path(out)
    finding = {"half_points": half_points(summary), "rule": HALF_POINT_RULE}
    (out / FINDING_FILE).write_text(json.dumps(finding, indent=2) + "\n")
    lines = ["", "## finding", "", "Bits per parameter at which each accuracy falls to half its float32 value:", "",
             "| coding | recall float32 | recall half-point | pattern float32 | pattern half-point | verdict |",
             "|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for coding, entry in finding["half_points"].items():
        cells = [f"{entry[n]['float32']:.3f} | {_format_point(entry[n]['half_point_bits_per_parameter'])}"
                 for n in ACCURACIES]  # fmt: skip
        lines.append(f"| {coding} | {' | '.join(cells)} | {entry['verdict']} |")
    with open(out / "study.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    plot_accuracies(summary, finding, out / "plots" / "accuracy.png")
    return finding


def plot_accuracies(summary: dict, finding: dict, path: Path) -> None:
    """Recall and pattern accuracy against bits per parameter, one line per coding, the float32 row at the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (full,) = _chain(summary, FLOAT32)
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=100)
    for name, color in zip(ACCURACIES, ("tab:red", "tab:blue"), strict=True):
        key = f"{name}_accuracy"
        for coding, style in zip(CODINGS, ("o-", "s--"), strict=True):
            chain = [full, *_chain(summary, coding)]
            ax.plot([r["facts"]["bits_per_parameter"] for r in chain], [r["facts"][key] for r in chain], style,
                    color=color, label=f"{name}, {coding}")  # fmt: skip
        ax.axhline(full["facts"][key] / 2, color=color, lw=0.8, ls=":", label=f"half of float32 {name}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message bits per free parameter (float32 row: tar.gz)")
    ax.set_ylabel("greedy exact-match accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("memorization: recall (keyed random) vs pattern completion (held out)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
