"""The memorization study: its corpus (rules that determine the continuation, unique keys, held-out records never in
the training corpus, shards `bound` reads), greedy exact match with ties against the model, the half-point finding,
and `tokenbounds study memorization --size smallest` end to end: paid for its best row, resumed row by row to the
same result, refusing a corpus without random or structured records and a run directory of another configuration."""

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tokenbounds.cli import main
from tokenbounds.data.sequences import (
    SequenceConfig,
    generate,
    held_out,
    read_eval,
    structured_values,
    write_sequences,
)
from tokenbounds.data.shards import open_corpus
from tokenbounds.errors import UserError
from tokenbounds.models.registry import open_model
from tokenbounds.pipeline import compute_bound
from tokenbounds.studies import runner
from tokenbounds.studies.memorization import (
    continuation_ranks,
    greedy_exact,
    half_point,
    memorization_study,
    sequence_config,
)
from tokenbounds.studies.memorization_sizes import SIZES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALLEST = ["study", "memorization", "--size", "smallest"]
ROWS = 5  # float32, then 16 and 2 levels, each uniform and k-means


def small_corpus(**changes) -> SequenceConfig:
    return replace(sequence_config(SIZES["smallest"]), **changes)


def test_structured_families_follow_their_rules():
    assert structured_values("progression", (14, 3), 6, 16).tolist() == [14, 1, 4, 7, 10, 13]
    assert structured_values("motif", (5, 0, 9), 7, 16).tolist() == [5, 0, 9, 5, 0, 9, 5]
    assert structured_values("sorted run", (15, 3, 1), 7, 16).tolist() == [15, 15, 0, 0, 0, 1, 1]


def every_rule_sequence(cfg: SequenceConfig) -> np.ndarray:
    """Every progression and sorted run of the configuration, as (count, P + n) value rows."""
    length = cfg.prompt + cfg.continuation
    params = [("progression", (a, d)) for a in range(cfg.n_values) for d in range(1, cfg.max_step + 1)]
    params += [("sorted run", (a, r, o)) for a in range(cfg.n_values) for r in range(2, cfg.max_repeat + 1)
               for o in range(r)]  # fmt: skip
    return np.array([structured_values(f, p, length, cfg.n_values) for f, p in params])


def test_the_prompt_determines_the_continuation_and_held_out_records_are_not_trained_on():
    cfg = small_corpus(n_structured=600, n_heldout=200)
    records, evals = generate(cfg)
    structured = np.array([r[1:-1] for r in records if r[0] == cfg.pattern])
    assert len(structured) == cfg.n_structured and all(r[-1] == cfg.eot for r in records)
    # every parameter set of every family whose first P values are the prompt continues it the same way
    candidates = every_rule_sequence(cfg)
    for row in np.concatenate([structured, evals.pattern[:, 1:]]):
        prompt = row[: cfg.prompt]
        motifs = [np.resize(prompt[:p], len(row)) for p in range(2, cfg.max_period + 1)]
        matches = [c for c in [*candidates, *motifs] if np.array_equal(c[: cfg.prompt], prompt)]
        assert matches and all(np.array_equal(c, row) for c in matches), row
    assert not {tuple(r) for r in structured} & {tuple(r[1:]) for r in evals.pattern}  # held out: never trained on
    assert len({tuple(r[: 1 + cfg.key_length]) for r in evals.recall}) == cfg.n_random  # unique keys
    keyed = {tuple(r[:-1]) for r in records if r[0] == cfg.key}
    assert keyed == {tuple(r) for r in evals.recall}  # the recall set is the corpus' random records


def test_the_split_holds_out_a_fifth_of_each_small_family():
    progressions = [(a, d) for a in range(64) for d in range(1, 5)]
    sorted_runs = [(a, r, o) for a in range(64) for r in (2, 3) for o in range(r)]
    for family, space in (("progression", progressions), ("sorted run", sorted_runs)):
        share = np.mean([held_out(family, p) for p in space])
        assert 0.1 < share < 0.3, (family, share)


def test_the_corpus_is_shards_that_bound_reads(tmp_path):
    cfg = small_corpus()
    meta = write_sequences(cfg, tmp_path / "data")
    corpus = open_corpus(tmp_path / "data")
    records, evals = generate(cfg)
    assert corpus.eot == cfg.eot and corpus.vocab_size == cfg.vocab_size == meta["vocab_size"]
    assert np.array_equal(np.asarray(corpus.shards[0]), np.concatenate(records))  # written as generated
    corpus.verify(cfg.vocab_size, progress=False)  # checksums and ids as `prepare` writes them
    assert np.array_equal(read_eval(tmp_path / "data").pattern, evals.pattern)
    with pytest.raises(UserError, match="exists"):
        write_sequences(cfg, tmp_path / "data")
    other = generate(replace(cfg, seed=1))[0]
    assert not np.array_equal(np.concatenate(other[:20]), np.concatenate(records[:20]))  # the seed decides the draw


@pytest.mark.parametrize("changes", [{"n_random": 0}, {"n_structured": 0}])
def test_a_corpus_without_random_or_structured_records_is_refused(changes):
    with pytest.raises(UserError, match="needs random and structured sequences"):
        small_corpus(**changes)


class ConstantLogits:
    """Every token scores the same: greedy decoding has no unique choice anywhere."""

    vocab_size, max_positions, fills_out = 19, None, False

    def logits(self, input_ids, keep, out=None):
        return torch.zeros(input_ids.shape[0], len(keep), self.vocab_size)


def greedy_decode(model, prefix: np.ndarray, steps: int) -> list[int] | None:
    """Token-by-token greedy decoding; None at the first tie for the top (no unique greedy choice)."""
    tokens = list(prefix)
    for _ in range(steps):
        logits = model.logits(torch.tensor([tokens]), torch.tensor([len(tokens) - 1]))[0, 0].numpy()
        top = np.flatnonzero(logits == logits.max())
        if len(top) > 1:
            return None
        tokens.append(int(top[0]))
    return tokens[len(prefix) :]


def test_ties_at_the_top_are_misses():
    rows = np.zeros((3, 6), dtype=np.int64)
    ranks = continuation_ranks(ConstantLogits(), rows, 2, eot=18)
    assert ranks.shape == (3, 4) and np.all(ranks == 18) and not greedy_exact(ranks).any()


class Oracle:
    """Knows every record: after a record's prefix it scores its next token 1 and the rest 0, except that record k
    ties the true token with another at its second continuation step when k % 3 == 1, and prefers a wrong token at
    its last step when k % 3 == 2. So exactly the records k % 3 == 0 are reproduced by greedy decoding."""

    vocab_size, max_positions, fills_out = 19, None, False

    def __init__(self, rows: np.ndarray, prompt: int, eot: int):
        self.next = {}
        for k, row in enumerate(rows):
            tokens = [eot, *row]
            for j in range(1, len(tokens)):
                scores = np.zeros(self.vocab_size, dtype=np.float32)
                scores[tokens[j]] = 1
                step = j - 1 - prompt  # which continuation token tokens[j] is
                if k % 3 == 1 and step == 1:
                    scores[(tokens[j] + 1) % 16] = 1
                if k % 3 == 2 and step == len(row) - prompt - 1:
                    scores[(tokens[j] + 1) % 16] = 2
                self.next[tuple(tokens[:j])] = scores

    def logits(self, input_ids, keep, out=None):
        rows = [[self.next.get(tuple(ids[: j + 1]), np.zeros(self.vocab_size, np.float32)) for j in keep.tolist()]
                for ids in input_ids.tolist()]  # fmt: skip
        return torch.from_numpy(np.array(rows))


def test_greedy_exact_match_is_token_by_token_greedy_decoding():
    rows = np.random.default_rng(0).integers(16, size=(30, 7))
    model, prompt, eot = Oracle(rows, 3, 18), 3, 18
    ranks = continuation_ranks(model, rows, prompt, eot, batch=8)
    expected = np.arange(len(rows)) % 3 == 0
    assert np.array_equal(greedy_exact(ranks), expected)
    prefixes = np.concatenate([np.full((len(rows), 1), eot), rows[:, :prompt]], axis=1)
    decoded = [greedy_decode(model, p, rows.shape[1] - prompt) for p in prefixes]
    assert [d == list(r[prompt:]) for d, r in zip(decoded, rows, strict=True)] == expected.tolist()


def test_half_point_interpolates_in_log_bits():
    bits = np.array([32.0, 8.0, 4.0, 2.0])
    assert half_point(bits, np.array([0.8, 0.8, 0.6, 0.2]), 0.8) == pytest.approx(2**1.5)  # 0.4: halfway from 4 to 2
    assert half_point(bits, np.array([0.8, 0.4, 0.0, 0.0]), 0.8) == 8.0  # exactly half: falls there
    assert half_point(bits, np.array([0.8, 0.7, 0.6, 0.5]), 0.8) is None  # never falls to half
    assert math.isnan(half_point(bits, np.zeros(4), 0.0))  # nothing to lose
    assert half_point(bits, np.array([0.8, 0.1, 0.9, 0.9]), 0.8) == pytest.approx(2 ** (5 - 0.4 / 0.7 * 2))  # first


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted run of the smallest study."""
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("memo") / "run"
    assert main([*SMALLEST, "--out", str(out)]) == 0
    yield out
    torch.set_num_threads(threads)  # the CLI set its --threads for this process


def test_smallest_study_writes_accuracies_finding_and_plots(finished):
    summary = json.loads((finished / "study.json").read_text())
    assert summary["rows"] == len(summary["results"]) == ROWS and summary["paid_bits"] == math.log2(ROWS)
    codings = [r["params"]["coding"] for r in summary["results"]]
    assert codings == ["float32 tar.gz", "uniform", "k-means", "uniform", "k-means"]
    for r in summary["results"]:
        facts = r["facts"]
        assert facts["recall_records"] == 16 and facts["pattern_records"] == 64
        assert 0 <= facts["recall_accuracy"] <= facts["recall_token_accuracy"] <= 1
        assert r["bound"]["extra_bits"] == math.log2(ROWS) and r["bound"]["empirical"] < r["bound"]["bound"]
    bits = [r["facts"]["bits_per_parameter"] for r in summary["results"]]
    assert bits[0] > max(bits[1:]) and min(bits[1:3]) > max(bits[3:])  # float32 > 16 levels > 2 levels
    finding = json.loads((finished / "finding.json").read_text())
    assert set(finding["half_points"]) == {"uniform", "k-means"}
    assert "## finding" in (finished / "study.md").read_text()
    for name in ("accuracy", "levels"):
        assert (finished / "plots" / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def test_accuracies_are_the_token_by_token_greedy_decoding_of_the_priced_model(finished):
    """The recall of the 16-level k-means row is recomputed by decoding its (decoded, verified) message."""
    row = json.loads((finished / "rows" / "L16-kmeans.json").read_text())
    model = open_model(finished / "quantized" / "L16-kmeans")
    evals, eot = read_eval(finished / "data"), open_corpus(finished / "data").eot
    for name, rows, prompt in (("recall", evals.recall, evals.recall_prompt),
                               ("pattern", evals.pattern, evals.pattern_prompt)):  # fmt: skip
        prefixes = np.concatenate([np.full((len(rows), 1), eot), rows[:, :prompt]], axis=1)
        decoded = [greedy_decode(model, p, rows.shape[1] - prompt) for p in prefixes]
        exact = [d is not None and d == list(r[prompt:]) for d, r in zip(decoded, rows, strict=True)]
        assert np.array_equal(greedy_exact(continuation_ranks(model, rows, prompt, eot)), exact)
        assert row["facts"][f"{name}_accuracy"] == np.mean(exact)


def test_best_row_paid_log2_rows(finished):
    summary = json.loads((finished / "study.json").read_text())
    study = memorization_study(replace(SIZES["smallest"]), "smallest")
    row = next(r for r in study.rows if r.key == summary["best"]["key"])
    request = row.build(finished).request  # the hypothesis is already there: built again without training
    assert request.extra_bits == 0
    paid = compute_bound(replace(request, extra_bits=math.log2(ROWS)))
    assert paid["best_bits_per_token"]["bound"] == summary["best"]["bound"]
    written = json.loads((finished / "rows" / f"{row.key}.json").read_text())["report"]
    assert written["complexity_nats"] == paid["complexity_nats"] and written["results"] == paid["results"]
    unpaid = compute_bound(request)  # at this size every bound is clipped (vacuous), so compare the terms
    assert paid["complexity_nats"] - unpaid["complexity_nats"] == pytest.approx(math.log2(ROWS) * math.log(2))
    pairs = zip(paid["results"], unpaid["results"], strict=True)
    assert all(a["subsampling_term"] > b["subsampling_term"] for a, b in pairs)  # delta_2 / rows


def without_seconds(summary: dict) -> dict:
    return {**summary, "results": [{k: v for k, v in r.items() if k != "seconds"} for r in summary["results"]]}


def test_an_interrupted_study_resumes_to_the_uninterrupted_result(finished, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    calls = []

    def interrupted(request):
        calls.append(request.model)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return compute_bound(request)

    monkeypatch.setattr(runner, "compute_bound", interrupted)
    assert main([*SMALLEST, "--out", str(out)]) == 130
    assert sorted(p.stem for p in (out / "rows").iterdir()) == ["L16-uniform", "float32"]
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*SMALLEST, "--out", str(out), "--resume"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith("(done before)") and not lines[2].endswith("(done before)")
    resumed = json.loads((out / "study.json").read_text())
    assert without_seconds(resumed) == without_seconds(json.loads((finished / "study.json").read_text()))
    assert (out / "finding.json").read_bytes() == (finished / "finding.json").read_bytes()


def one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(n in err for n in needles), err


def test_bad_input_is_one_line_and_writes_nothing(finished, tmp_path, capsys):
    before = {p: p.read_bytes() for p in finished.rglob("*.json")}
    for flag in ("--n-random", "--n-structured"):
        one_line_error(capsys, [*SMALLEST, "--out", str(tmp_path / "x"), flag, "0"], "needs random and structured")
    one_line_error(capsys, [*SMALLEST, "--out", str(tmp_path / "x"), "--levels", "1"], "levels")
    assert not (tmp_path / "x").exists()
    one_line_error(capsys, [*SMALLEST, "--out", str(finished)], "not empty", "--resume")
    one_line_error(capsys, [*SMALLEST, "--out", str(finished), "--resume", "--n-random", "8"], "another",
                   "n_random: 16 -> 8")  # fmt: skip
    one_line_error(capsys, ["study", "memorization", "--out", str(finished), "--resume"], "size: 'smallest'")
    assert {p: p.read_bytes() for p in finished.rglob("*.json")} == before


def test_study_help_does_not_import_torch():
    code = (
        "import argparse, sys\n"
        "from tokenbounds.cli import study\n"
        "p = argparse.ArgumentParser(); study.add_parser(p.add_subparsers())\n"
        "try:\n    p.parse_args(['study', 'memorization', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, 'heavy import'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert "--n-random" in done.stdout and "--size {smallest,default,paper}" in done.stdout
