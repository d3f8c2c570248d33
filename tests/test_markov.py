"""Markov chains: counts against an independent count, the chain's loss against count-and-divide, the coded table
decodes exactly, context k means the document rule with L = k (for the chain and for a restricted GPT), and a too
large order or bfloat16 is refused in one line."""

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tokenbounds.cli import main
from tokenbounds.compress import count_tables
from tokenbounds.compress.coding import entropy_bits
from tokenbounds.compress.count_tables import CountTable, decode, encode
from tokenbounds.data import ngrams
from tokenbounds.data.shards import open_corpus
from tokenbounds.data.units import ContextRule
from tokenbounds.errors import UserError
from tokenbounds.models.markov import MESSAGE, write_markov
from tokenbounds.models.registry import open_model
from tokenbounds.models.scorer import score_units
from tokenbounds.pipeline import BoundRequest, compute_bound
from tokenbounds.studies.markov import _train
from tokenbounds.studies.markov_sizes import MarkovConfig

from .conftest import write_shards

VOCAB, EOT = 12, 11
GIB = 2**30


def documents(seed: int, n: int) -> np.ndarray:
    """Skewed ids (so contexts repeat) with an eot every ~15 tokens."""
    rng = np.random.default_rng(seed)
    tokens = np.minimum(rng.geometric(0.35, size=n) - 1, EOT - 1)
    tokens[rng.random(n) < 1 / 15] = EOT
    return tokens


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    shards = [documents(0, 700), documents(1, 45)]
    shards[1][0] = EOT  # a shard that starts with an eot: the virtual eot and a real one back to back
    return write_shards(tmp_path_factory.mktemp("markov") / "data", shards, eot=EOT, vocab=VOCAB)


def reference_contexts(shard: np.ndarray, k: int) -> list[tuple]:
    """ctx_k(i) by the document rule, read off one token at a time: back from i, stop after k tokens or at an eot
    (kept), or at the shard's start (a virtual eot is kept)."""
    out = []
    for i in range(len(shard)):
        ctx, j = [], i - 1
        while len(ctx) < k:
            if j < 0:
                ctx.append(EOT)
                break
            ctx.append(int(shard[j]))
            if shard[j] == EOT:
                break
            j -= 1
        out.append(tuple(reversed(ctx)))
    return out


@pytest.mark.parametrize("order", [0, 1, 2, 3, 5])
def test_counts_match_an_independent_count(corpus_dir, order, monkeypatch):
    monkeypatch.setattr(ngrams, "CHUNK", 64)  # many chunks and merges
    corpus = open_corpus(corpus_dir)
    grams, counts = ngrams.count_grams(corpus, order)
    reference = Counter()
    for shard in corpus.shards:
        for ctx, y in zip(reference_contexts(shard, order), shard.tolist(), strict=True):
            reference[(EOT,) * (order - len(ctx)) + ctx + (y,)] += 1
    assert {tuple(g): int(n) for g, n in zip(grams.tolist(), counts, strict=True)} == dict(reference)
    assert [tuple(g) for g in grams.tolist()] == sorted(reference)
    assert counts.sum() == corpus.n_tokens


@pytest.mark.parametrize("order", [0, 2, 4])
def test_empirical_loss_is_count_and_divide(corpus_dir, order, tmp_path):
    """Exhaustive bound of the chain: its unsmoothed NLL and each smoothed empirical loss equal those computed from
    a Counter of (context, next) over variable-length contexts: n(c, y) and n(c), then divide."""
    a = 0.5
    corpus = open_corpus(corpus_dir)
    write_markov(corpus, order, a, tmp_path / "chain", max_memory=GIB)
    alphas = (1e-3, 0.1)
    req = BoundRequest(
        model=str(tmp_path / "chain"), data=str(corpus_dir), mode="exhaustive", context=max(order, 1),
        alphas=alphas, ks=(1,), progress=False,
    )  # fmt: skip
    report = compute_bound(req)
    pairs = [(c, y) for s in corpus.shards for c, y in zip(reference_contexts(s, order), s.tolist(), strict=True)]
    joint, context = Counter(pairs), Counter(c for c, _ in pairs)
    p = np.array([(joint[c, y] + a / VOCAB) / (context[c] + a) for c, y in pairs])
    assert report["mean_nll_bits_unsmoothed"] == pytest.approx(-np.log2(p).mean(), rel=1e-6)
    for alpha in alphas:
        row = next(r for r in report["results"] if r["statistic"] == "bits_per_token" and r["alpha"] == alpha)
        assert row["empirical"] == pytest.approx(-np.log2((1 - alpha) * p + alpha / VOCAB).mean(), rel=1e-6)
    assert report["message_bits"] == 8 * (tmp_path / "chain" / MESSAGE).stat().st_size


def random_table(rng, order: int, vocab: int, n: int, big: bool) -> CountTable:
    rows = np.unique(rng.integers(0, vocab, size=(n, order + 1)), axis=0)
    counts = rng.geometric(0.3, size=len(rows))
    if big:
        counts[:: max(len(rows) // 7, 1)] += rng.integers(10, 10**9, size=len(counts[:: max(len(rows) // 7, 1)]))
    return CountTable(order, vocab, vocab - 1, 0.25, rows.astype(np.int64), counts.astype(np.int64))


@pytest.mark.parametrize("order", [0, 1, 3, 6])
def test_the_coded_table_decodes_exactly(order, monkeypatch):
    monkeypatch.setattr(count_tables, "CAP", 8)  # counts above the cap take the raw varint path
    rng = np.random.default_rng(order)
    for vocab, n, big in [(2, 1, False), (5, 300, True), (300, 2000, True)]:
        table = random_table(rng, order, vocab, n, big)
        message = encode(table)
        decoded = decode(message)
        assert decoded == table and decoded.pseudo_count == 0.25
        # the coded symbols cannot beat their empirical entropy: the length is an honest code length
        streams, _ = count_tables._streams(table)
        assert 8 * len(message) >= sum(entropy_bits(np.bincount(s)) for s in streams)


def test_an_altered_or_unsorted_table_is_refused():
    table = random_table(np.random.default_rng(0), 2, 7, 200, False)
    message = bytearray(encode(table))
    message[-3] ^= 1
    with pytest.raises(UserError, match="checksum"):
        decode(bytes(message))
    with pytest.raises(UserError, match="not a tokenbounds Markov"):
        decode(b"TBQM" + bytes(message[4:]))
    flipped = CountTable(2, 7, 6, 0.25, table.grams[::-1].copy(), table.counts[::-1].copy())
    with pytest.raises(ValueError, match="sorted"):
        encode(flipped)


def test_the_chain_reads_k_tokens_since_the_last_eot(corpus_dir, tmp_path):
    """The chain's logits at position j do not change when input j - k (the token k + 1 back) changes; they do when
    input j - k + 1 (k back) changes, and an eot in the window resets the context."""
    k = 3
    write_markov(open_corpus(corpus_dir), k, 1.0, tmp_path / "chain", max_memory=GIB)
    chain = open_model(tmp_path / "chain")
    ids = torch.tensor([[0, 1, 0, 0, 1, 2, 0, 0]])
    j = torch.tensor([6])
    base = chain.logits(ids, j)
    far, near = ids.clone(), ids.clone()
    far[0, 6 - k] = 5
    near[0, 6 - k + 1] = 5
    assert torch.equal(chain.logits(far, j), base)
    assert not torch.equal(chain.logits(near, j), base)
    reset = ids.clone()
    reset[0, 5] = EOT  # context [eot, 0]: whatever came before the eot
    changed = reset.clone()
    changed[0, 4] = 7
    assert torch.equal(chain.logits(reset, j), chain.logits(changed, j))
    short = torch.tensor([[EOT, 0]])  # an input shorter than k is a document start: the same as a padded one
    assert torch.equal(
        chain.logits(short, torch.tensor([1])), chain.logits(torch.tensor([[EOT, EOT, 0]]), torch.tensor([2]))
    )


def test_a_restricted_gpt_does_not_see_the_token_k_plus_1_back(corpus_dir, tmp_path):
    """The study's GPT with context k, under the document rule with L = k: its prediction of x_i is the same when
    x_{i-k-1} changes and differs when x_{i-k} does; a context longer than k is refused."""
    k = 3
    cfg = MarkovConfig(n_layer=1, n_head=2, n_embd=16, steps=3, tokens_per_step=48, warmup=1, data=str(corpus_dir))
    model_dir, _ = _train(cfg, tmp_path, k)
    gpt = open_model(model_dir)
    assert gpt.max_positions == k
    corpus = open_corpus(corpus_dir)
    shard = np.asarray(corpus.shards[0])
    i = next(i for i in range(k + 1, len(shard)) if EOT not in shard[i - k - 1 : i + 1])
    rule = ContextRule.document(k)

    def logp_of_target(tokens: np.ndarray) -> float:
        edited = write_shards(tmp_path / f"edit{len(list(tmp_path.iterdir()))}", [tokens], eot=EOT, vocab=VOCAB)
        unit = rule.unit_at(open_corpus(edited), i)
        return float(score_units(gpt, [unit], alphas=(), ks=(), progress=False).logp[0])

    base = logp_of_target(shard)
    far, near = shard.copy(), shard.copy()
    far[i - k - 1] = (far[i - k - 1] + 1) % EOT
    near[i - k] = (near[i - k] + 1) % EOT
    assert logp_of_target(far) == base
    assert logp_of_target(near) != base
    with pytest.raises(UserError, match="exceeds the model's maximum"):
        ContextRule.document(k + 1).check(corpus, gpt.max_positions)


def test_too_large_an_order_is_refused_with_its_estimate(corpus_dir, tmp_path):
    corpus = open_corpus(corpus_dir)
    with pytest.raises(UserError, match=r"order 40 may need [0-9.]+ GiB .*745 distinct 41-grams") as err:
        write_markov(corpus, 40, 1.0, tmp_path / "chain", max_memory=10**6)
    assert "\n" not in str(err.value) and not (tmp_path / "chain").exists()
    assert ngrams.max_grams(corpus, 1, VOCAB) == VOCAB**2 < corpus.n_tokens  # min(m, V^(k+1)), not m
    assert ngrams.count_bytes(10, 2) > 10 * 3 * 4  # at least the keys


def test_bfloat16_is_refused_in_one_line(corpus_dir, tmp_path, capsys):
    write_markov(open_corpus(corpus_dir), 1, 1.0, tmp_path / "chain", max_memory=GIB)
    with pytest.raises(UserError, match="cannot run in bfloat16") as err:
        open_model(tmp_path / "chain", "bfloat16")
    assert "\n" not in str(err.value)
    flags = ["--mode", "token", "--context", "1", "--compute-dtype", "bfloat16"]
    assert main(["bound", "--model", str(tmp_path / "chain"), "--data", str(corpus_dir), *flags]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0  # one line: no warning about slow bfloat16 before it
    assert math.isfinite(open_model(tmp_path / "chain").logits(torch.tensor([[0, 1]]), torch.tensor([1])).sum())
