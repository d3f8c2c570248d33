"""`bound --unit document|sequence`: the IID bound over whole documents (sliding windows) or aligned sequences.

Checked against independent references: the documents found by the chunked scan against a whole-array search; the
windows against the exhaustive units of the document rule; the draws' frequencies against 1/n (uniform over
documents, not over tokens); every drawn value against a document mean recomputed with the model one target at a
time; and every report row against Hoeffding's formula written out with m = n units.
"""

import json
import math

import numpy as np
import pytest
from scipy import stats

from tokenbounds.coverage.documents import (
    DOCUMENT_SETTINGS,
    document_source,
    expected_document_loss,
    length_weighted_draws,
    run_document_setting,
)
from tokenbounds.coverage.sources import loss_tables, sample_paths
from tokenbounds.data.documents import document_ends, whole_units
from tokenbounds.data.embedded import SCENE_HEADING, scenes, works, write_scenes
from tokenbounds.data.shards import open_corpus
from tokenbounds.data.units import ContextRule
from tokenbounds.pipeline import BoundRequest, compute_bound_with_units

from .conftest import EOT, write_shards
from .test_cli_bound import one_line_error, run_cli
from .test_report_recompute import complexity, expected_split
from .test_units import reference_context

ALPHAS = (0.01, 0.25)


@pytest.fixture
def small_corpus(tmp_path):
    # One long document (beyond every context below), short ones, a shard starting with an eot, consecutive eots,
    # and a shard that does not end with an eot.
    shard0 = np.array([5, 6, 7, EOT, *range(30, 60), EOT, 8, EOT])
    shard1 = np.array([EOT, 20, EOT, EOT, 21, 22, 23, 24, 25])
    return open_corpus(write_shards(tmp_path / "c", [shard0, shard1]))


def reference_documents(corpus) -> list[tuple[int, int, int]]:
    """(shard, first target, last target) of every document, the obvious way: split after every eot."""
    docs = []
    for k, shard in enumerate(corpus.shards):
        x = np.asarray(shard)
        start = 0
        for i in range(len(x)):
            if x[i] == EOT or i == len(x) - 1:
                docs.append((k, start, i))
                start = i + 1
    return docs


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
def test_chunked_scan_finds_every_document(small_corpus, chunk):
    ref = reference_documents(small_corpus)
    found = []
    for k, shard in enumerate(small_corpus.shards):
        ends = document_ends(shard, EOT, chunk=chunk)
        starts = np.concatenate([[0], ends[:-1] + 1])
        found += [(k, int(a), int(b)) for a, b in zip(starts, ends, strict=True)]
    assert found == ref
    population = whole_units("document", small_corpus, 4)
    assert population.n == len(ref)
    assert [population.n_targets(j) for j in range(population.n)] == [b - a + 1 for _, a, b in ref]


@pytest.mark.parametrize("context", [1, 3, 5, 50])
def test_windows_score_every_token_once_under_the_document_rule(small_corpus, context):
    population = whole_units("document", small_corpus, context)
    windows = [w for j in range(population.n) for w in population.windows(j)]
    assert [population.n_windows(j) for j in range(population.n)] == [
        len(list(population.windows(j))) for j in range(population.n)
    ]
    positions = np.concatenate([w.positions for w in windows])
    assert np.array_equal(positions, np.arange(small_corpus.n_tokens))  # every token once, in order
    for w, ref in zip(windows, ContextRule.document(context).exhaustive_units(small_corpus), strict=True):
        assert np.array_equal(w.tokens, ref.tokens) and w.first == ref.first
    for w in windows:  # each target sees exactly the rule's context
        for j, p in enumerate(w.positions.tolist()):
            (shard,), (local,) = small_corpus.locate(np.array([p]))
            shard_tokens = np.asarray(small_corpus.shards[shard])
            assert w.tokens[: w.first + j].tolist() == reference_context(shard_tokens, local, context, EOT)
            assert w.tokens[w.first + j] == small_corpus.token(p)


def test_long_document_is_scored_in_sliding_windows(small_corpus):
    population = whole_units("document", small_corpus, 5)
    long = max(range(population.n), key=population.n_targets)
    assert population.n_targets(long) == 31
    windows = list(population.windows(long))
    assert len(windows) == 1 + 31 - 5  # a head window of 5 targets, then one window per target
    assert windows[0].n_targets == 5 and all(w.n_targets == 1 and len(w.tokens) == 6 for w in windows[1:])


@pytest.mark.parametrize("kind", ["document", "sequence"])
def test_draws_are_uniform_over_units_not_tokens(small_corpus, kind):
    population = whole_units(kind, small_corpus, 8)
    distinct, draws = population.sample(60_000, np.random.default_rng(0))
    counts = np.bincount(distinct[draws], minlength=population.n)
    # Uniform over the n units: a chi-square goodness-of-fit test. Drawing in proportion to length (as token and
    # block modes do) gives the 31-token document ~31 / 44 of the draws and fails this by far.
    assert stats.chisquare(counts).pvalue > 1e-4
    assert counts.min() > 0


def test_sequences_are_the_aligned_blocks(small_corpus):
    population = whole_units("sequence", small_corpus, 8)
    lengths = small_corpus.shard_lengths.tolist()
    assert population.n == sum(-(-n // 8) for n in lengths)
    blocks = [next(population.windows(j)) for j in range(population.n)]
    assert np.array_equal(np.concatenate([b.positions for b in blocks]), np.arange(small_corpus.n_tokens))
    ref = list(ContextRule.block(8, 8).exhaustive_units(small_corpus))
    assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(blocks, ref, strict=True))


CONTEXT = 8  # shorter than the tiny corpus' documents: sliding windows are exercised


@pytest.fixture(scope="module")
def reference_probs(tiny_gpt2, tiny_corpus) -> np.ndarray:
    """The model probability of every token, each predicted from its rule context alone (no padding: the targets
    are grouped by context length, one plain forward pass per length)."""
    import torch
    from transformers import GPT2LMHeadModel

    corpus = open_corpus(tiny_corpus)
    model = GPT2LMHeadModel.from_pretrained(tiny_gpt2).eval()
    contexts = {}
    for p in range(corpus.n_tokens):
        (shard,), (local,) = corpus.locate(np.array([p]))
        ctx = reference_context(np.asarray(corpus.shards[shard]), local, CONTEXT, EOT)
        contexts.setdefault(len(ctx), []).append((p, ctx))
    out = np.full(corpus.n_tokens, np.nan)
    for group in contexts.values():
        positions = [p for p, _ in group]
        with torch.no_grad():
            logits = model(torch.tensor([c for _, c in group])).logits[:, -1].double()
        logp = torch.log_softmax(logits, -1)[torch.arange(len(group)), [corpus.token(p) for p in positions]]
        out[positions] = logp.exp().numpy()
    return out


def hoeffding_row(report, row, loss, n_units):
    """lotfi's row by hand: Delta sqrt((C + ln 1/delta1) / (2 n)) with n the number of units; Hoeffding UCB."""
    alpha, vocab = row["alpha"], report["vocab_size"]
    a = -math.log2(1 - alpha + alpha / vocab)
    width = math.log2(vocab / alpha) - a
    delta1, delta2 = expected_split(report)
    term = width * math.sqrt((complexity(report) + math.log(1 / delta1)) / (2 * n_units))
    empirical = float(np.mean(loss))
    sub = 0.0 if report["samples"] is None else width * math.sqrt(math.log(1 / delta2) / (2 * len(loss)))
    sub = min(empirical + sub, a + width) - empirical
    return {"empirical": empirical, "complexity_term": term, "subsampling_term": sub}


@pytest.mark.parametrize("mode", ["sampled", "exhaustive"])
def test_document_bound_recomputed_from_the_model(tiny_gpt2, tiny_corpus, reference_probs, mode):
    corpus = open_corpus(tiny_corpus)
    req = BoundRequest(
        model=str(tiny_gpt2),
        data=str(tiny_corpus),
        unit="document",
        method="lotfi",
        mode="exhaustive" if mode == "exhaustive" else "block",
        subsample_ucb="hoeffding",
        samples=40,
        context=CONTEXT,
        alphas=ALPHAS,
        ks=(),
        message_bits=300,
        progress=False,
    )
    report, units = compute_bound_with_units(req)
    docs = reference_documents(corpus)
    assert report["unit"] == "document" and report["n_units"] == len(docs)
    assert "every document weighs the same" in report["bounded_quantity"]
    offsets = corpus.offsets
    for j, alpha in enumerate(ALPHAS):
        token_loss = -np.log2((1 - alpha) * reference_probs + alpha / report["vocab_size"])
        doc_means = np.array([token_loss[offsets[k] + a : offsets[k] + b + 1].mean() for k, a, b in docs])
        if mode == "sampled":  # each draw's value is its document's mean loss, in sampling order
            drawn = units["unit_loss"][j]
            # the draws, re-drawn independently: uniform over the documents, from the bound's stream
            from tokenbounds.streams import BOUND_UNITS, stream

            picked = stream(0, BOUND_UNITS).integers(0, len(docs), size=40)
            np.testing.assert_allclose(drawn, doc_means[picked], rtol=2e-5)
            loss = drawn
        else:
            loss = doc_means  # exhaustive: the mean of every document's mean, not the token mean
            assert abs(report["results"][j]["empirical"] - token_loss.mean()) > 1e-6
        row = report["results"][j]
        for key, value in hoeffding_row(report, row, loss, len(docs)).items():
            assert row[key] == pytest.approx(value, rel=2e-5, abs=1e-9), key
        total = row["empirical"] + row["complexity_term"] + row["subsampling_term"]
        assert row["bound"] == pytest.approx(min(total, row["loss_min"] + row["loss_range"]))


def test_sequence_bound_uses_n_sequences(tiny_gpt2, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["bound", "--model", str(tiny_gpt2), "--data", str(tiny_corpus), "--message-bits", "300"]
    args += ["--context", "16", "--unit", "sequence", "--mode", "exhaustive", "--no-progress", "--json", str(out)]
    code, printed, err = run_cli([*args, "--topk", "1"], capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    n = sum(-(-n // 16) for n in open_corpus(tiny_corpus).shard_lengths.tolist())
    assert report["n_units"] == n and report["method"] == "lotfi" and report["mode"] == "exhaustive"
    assert f"n = {n} sequences" in printed and "bounded: E_S[mean loss" in printed
    for row in report["results"]:
        delta1, _ = expected_split(report)
        width = row["loss_range"]
        assert row["complexity_term"] == pytest.approx(
            width * math.sqrt((complexity(report) + math.log(1 / delta1)) / (2 * n)), rel=1e-12
        )


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--unit", "document", "--method", "eb"], ["lotfi only", "martingale over tokens"]),
        (["--unit", "document", "--mode", "token"], ["--mode token", "documents"]),
        (["--unit", "sequence", "--mode", "block"], ["--mode block", "sequences"]),
        (["--unit", "document", "--rule", "block"], ["document rule"]),
        (["--unit", "sequence", "--stride", "8"], ["--stride equal to"]),
        (["--unit", "sequence", "--rule", "document"], ["block rule"]),
        (["--unit", "document", "--paper"], ["--paper"]),
    ],
)
def test_refusals(tiny_gpt2, tiny_corpus, capsys, extra, needles):
    args = ["bound", "--model", str(tiny_gpt2), "--data", str(tiny_corpus), "--message-bits", "300"]
    code, _, err = run_cli([*args, "--context", "16", "--no-progress", *extra], capsys)
    one_line_error(code, err, *needles)


def test_exact_document_risk_matches_simulation():
    """R_doc of the coverage source against the mean of 50 000 simulated documents' mean losses."""
    s = DOCUMENT_SETTINGS["hard-start-V50"]
    chain, model = document_source(s)
    table = loss_tables(chain, model, 0.01)
    rng = np.random.default_rng(3)
    states, tokens = sample_paths(chain, 50_000, max(s.lengths), rng)
    lengths = rng.choice(np.asarray(s.lengths), size=50_000)
    loss = np.where(np.arange(max(s.lengths)) < lengths[:, None], table.loss[states, tokens], 0.0)
    means = loss.sum(axis=1) / lengths
    exact = expected_document_loss(chain, table.expected_loss, s.lengths)
    assert abs(means.mean() - exact) < 4 * means.std() / math.sqrt(len(means))
    token_weighted = loss.sum() / lengths.sum()  # what a token-level bound's R_hat estimates: another quantity
    assert abs(token_weighted - exact) > 10 * means.std() / math.sqrt(len(means))


@pytest.mark.parametrize("name", list(DOCUMENT_SETTINGS))
def test_document_bound_coverage(name):
    """Every document method holds at its delta over 300 corpora of i.i.d. documents; the length-weighted draw
    (the token samplers' rule applied to documents) is caught where short documents are harder."""
    result = run_document_setting(DOCUMENT_SETTINGS[name], 300)
    for meth, r in result["methods"].items():
        caught = r["violation_rate"] > r["allowed"]
        assert caught == (r["broken"] and name == "hard-start-V50"), (name, meth, r)


def test_length_weighted_draws_are_in_proportion_to_length():
    lengths = np.array([[1, 3, 6], [5, 5, 0 + 10]])
    drawn = length_weighted_draws(lengths, 100_000, np.random.default_rng(0))
    for row, got in zip(lengths, drawn, strict=True):
        assert got.min() >= 0 and got.max() < 3
        np.testing.assert_allclose(np.bincount(got, minlength=3) / len(got), row / row.sum(), atol=0.01)


def test_scenes_split_the_embedded_works_at_their_headings(tmp_path):
    """Each work's scenes, concatenated, are the work; every piece after the first starts with a scene heading."""
    all_works = works()
    pieces = [scenes(w["text"]) for w in all_works]
    assert all("".join(p) == w["text"] for p, w in zip(pieces, all_works, strict=True))
    assert all(SCENE_HEADING.match(piece) for p in pieces for piece in p[1:])
    assert len(pieces[all_works.index(next(w for w in all_works if w["title"] == "Sonnets"))]) == 1  # no headings
    assert scenes("front\nSCENE I. A hall.\ntext\nScene 2. Out.\nSCENE: a setting\n") == [
        "front\n",
        "SCENE I. A hall.\ntext\n",
        "Scene 2. Out.\nSCENE: a setting\n",
    ]
    with open(write_scenes(tmp_path / "scenes.jsonl"), encoding="utf-8") as f:
        assert sum(1 for line in f if json.loads(line)["text"]) == sum(map(len, pieces)) == 777


def test_token_reports_say_what_they_bound(tiny_gpt2, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["bound", "--model", str(tiny_gpt2), "--data", str(tiny_corpus), "--message-bits", "300"]
    args += ["--context", "16", "--samples", "20", "--topk", "1", "--no-progress", "--json", str(out)]
    code, printed, err = run_cli(args, capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["unit"] == "token" and report["bounded_quantity"].startswith("R = (1/m) sum_i E[l_i | x_<i]")
    assert "unit token" in printed and "bounded: R = (1/m)" in printed
