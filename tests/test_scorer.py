"""Batched, padded, logits-at-kept-positions scoring equals a plain one-unit-at-a-time forward pass."""

import numpy as np
import pytest
import torch

from tokenbounds.data.shards import open_corpus
from tokenbounds.data.units import exhaustive_units, token_unit
from tokenbounds.models.hf import load_model
from tokenbounds.models.scorer import score_units
from tokenbounds.stats.centring import (
    BIN_SHIFT,
    binned_outside_topk,
    binned_smoothed_entropy_bits,
    smoothed_entropy_bits,
)


def plain_scores(hf_model, unit):
    """Reference: full logits of the unpadded unit, log_softmax in float64, rank by counting.

    The rank counts ties against the model (stats/topk.py): #{v : z_v >= z_y} - 1. This reference used to count
    #{v : z_v > z_y}, which encoded the defect of issue 9 (a tie turned a miss into a hit).
    """
    with torch.no_grad():
        logits = hf_model(torch.from_numpy(unit.tokens[None, :-1])).logits[0].double()
    rows = logits[unit.first - 1 :]
    targets = torch.from_numpy(unit.tokens[unit.first :])
    logp = torch.log_softmax(rows, -1).gather(1, targets[:, None])[:, 0]
    rank = torch.tensor([(row >= row[t]).sum() - 1 for row, t in zip(rows, targets, strict=True)])
    return logp.numpy(), rank.numpy(), torch.softmax(rows, -1).numpy()


@pytest.fixture(scope="module")
def model(tiny_gpt2):
    return load_model(tiny_gpt2)


def test_batched_scores_equal_plain_forward(model, tiny_corpus):
    corpus = open_corpus(tiny_corpus)
    rng = np.random.default_rng(0)
    units = [token_unit(corpus, int(p), 16) for p in rng.integers(0, corpus.n_tokens, 60)]
    units += list(exhaustive_units(corpus, 16))[:40]  # multi-target prefix units and sliding windows
    alphas, ks = [0.01, 0.5], [1, 5]
    scores = score_units(model, units, alphas=alphas, ks=ks, max_tokens=200, progress=False)
    offset = 0
    for index, unit in enumerate(units):
        logp, rank, probs = plain_scores(model.model, unit)
        n = unit.n_targets
        got = slice(offset, offset + n)
        assert np.all(scores.unit[got] == index)
        assert np.array_equal(scores.positions[got], unit.positions)
        np.testing.assert_allclose(scores.logp[got], logp, atol=2e-5)
        assert np.array_equal(scores.rank[got], rank)
        tail = 1 - probs.max(axis=-1)
        for j, alpha in enumerate(alphas):
            # The shipped centring equals its numpy reference, and lies within its stated error of the exact one.
            shipped = binned_smoothed_entropy_bits(probs, alpha)
            np.testing.assert_allclose(scores.entropy_bits[got, j], shipped, atol=2e-5)
            slack = (1 - alpha) * tail * 2.0 ** -(24 - BIN_SHIFT) / np.log(2) + 2e-5
            assert np.all(np.abs(scores.entropy_bits[got, j] - smoothed_entropy_bits(probs, alpha)) <= slack)
        np.testing.assert_allclose(scores.outside_topk[got], binned_outside_topk(probs, ks), atol=1e-5)
        for j, k in enumerate(ks):  # within the stated 2^-(23 - BIN_SHIFT) of the exact mass of tokens 2..k
            ordered = np.sort(probs, axis=-1)[:, ::-1]
            slack = 2.0 ** -(23 - BIN_SHIFT) * ordered[:, 1:k].sum(-1) + 1e-5
            assert np.all(np.abs(scores.outside_topk[got, j] - (1 - ordered[:, :k].sum(-1))) <= slack)
        offset += n
    assert offset == len(scores.logp)
    assert scores.input_tokens == sum(len(u.tokens) - 1 for u in units)


def test_bfloat16_compute_is_close_to_float32(tiny_gpt2, tiny_corpus):
    corpus = open_corpus(tiny_corpus)
    units = [token_unit(corpus, p, 32) for p in range(0, corpus.n_tokens, 7)]
    full = score_units(load_model(tiny_gpt2), units, progress=False)
    half = score_units(load_model(tiny_gpt2, "bfloat16"), units, progress=False)
    assert half.logp.dtype == np.float32
    assert np.abs(full.logp - half.logp).mean() < 0.05
    assert load_model(tiny_gpt2, "bfloat16").describe()["compute_dtype"] == "bfloat16"
