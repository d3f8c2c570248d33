"""The shipped eb centring: in [a, a + Delta], a function of the prediction only, close to the exact entropy, and
the scorer's torch code equal to its numpy reference (stats/centring.py)."""

import numpy as np
import pytest
import torch

from tokenbounds.models.scorer import _target_stats, _top_logits
from tokenbounds.stats.centring import (
    BIN_SHIFT,
    CENTRING,
    EXACT_TOP,
    binned_smoothed_entropy_bits,
    smoothed_entropy_bits,
)
from tokenbounds.stats.smoothing import LN2, loss_range

ALPHAS = [1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9]
BIN_ERROR_NATS = 2.0 ** -(24 - BIN_SHIFT)  # per unit of mass outside the top EXACT_TOP (centring.py)


def logit_cases(vocab: int, rng: np.random.Generator) -> np.ndarray:
    """Random, spread, peaked, tied, one-hot, uniform, and -inf-holding rows of logits."""
    rows = [
        rng.standard_normal(vocab) * 3,
        rng.standard_normal(vocab) * 0.3,
        np.where(np.arange(vocab) < 3, 25.0, rng.standard_normal(vocab)),  # three tokens hold nearly everything
        np.round(rng.standard_normal(vocab) * 2),  # many ties, some straddling the top-EXACT_TOP boundary
        np.where(np.arange(vocab) == vocab // 2, 1e4, -1e4),  # one-hot
        np.zeros(vocab),  # uniform
        np.where(np.arange(vocab) % 3 == 0, -np.inf, rng.standard_normal(vocab) * 5),  # p = 0 for a third
        -rng.exponential(8.0, vocab),  # a long tail down to p ~ 1e-30
    ]
    return np.stack(rows).astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("vocab", [2, 50, 300, 5000, 49152])
def test_centring_lies_in_range_and_near_the_exact_entropy(vocab):
    rng = np.random.default_rng(vocab)
    probs = softmax(logit_cases(vocab, rng))
    tail = 1 - np.sort(probs, -1)[:, ::-1][:, :EXACT_TOP].sum(-1)
    for alpha in ALPHAS:
        a, width = loss_range(alpha, vocab)
        c = binned_smoothed_entropy_bits(probs, alpha)
        assert np.all(c >= a) and np.all(c <= a + width)
        exact = smoothed_entropy_bits(probs, alpha)
        # The stated error: (1 - alpha) * tail mass * 2^-(24 - BIN_SHIFT) nats; exact when V <= EXACT_TOP.
        np.testing.assert_array_less(np.abs(c - exact), (1 - alpha) * tail * BIN_ERROR_NATS / LN2 + 1e-9)
        if vocab <= EXACT_TOP:
            np.testing.assert_allclose(c, exact, rtol=0, atol=1e-9)


def test_centring_is_tight_on_lm_like_predictions():
    """Not just within the worst case: on smooth tails the bin errors cancel (1e-4 bits is 1/100 of the bound)."""
    rng = np.random.default_rng(1)
    probs = softmax((rng.standard_normal((20, 49152)) * 2.5).astype(np.float32))
    for alpha in (1e-4, 0.01, 0.5):
        gap = np.abs(binned_smoothed_entropy_bits(probs, alpha) - smoothed_entropy_bits(probs, alpha))
        assert gap.max() < 3e-4


def test_one_hot_centring_is_exact_and_at_least_a():
    vocab = 1000
    p = np.zeros((1, vocab))
    p[0, 7] = 1.0
    for alpha in ALPHAS:
        a, _ = loss_range(alpha, vocab)
        c = binned_smoothed_entropy_bits(p, alpha)
        assert c[0] >= a
        np.testing.assert_allclose(c, smoothed_entropy_bits(p, alpha), rtol=1e-12)  # the tail is all p = 0


@pytest.mark.parametrize("vocab", [2, 50, 300, 5000, 49152])
def test_scorer_centring_equals_the_numpy_reference(vocab):
    rng = np.random.default_rng(vocab + 1)
    z = logit_cases(vocab, rng)
    probs = softmax(z)
    logits = torch.from_numpy(z)
    ks = [1, 5, 100]
    _, _, entropy, outside = _target_stats(logits, torch.zeros(len(z), dtype=torch.int64), ALPHAS, ks)
    for j, alpha in enumerate(ALPHAS):
        np.testing.assert_allclose(entropy[:, j].numpy(), binned_smoothed_entropy_bits(probs, alpha), atol=2e-5)
        a, width = loss_range(alpha, vocab)
        assert torch.all(entropy[:, j] >= np.float32(a)) and torch.all(entropy[:, j] <= np.float32(a + width))
    for j, k in enumerate(ks):
        expected = np.clip(1 - np.sort(probs, -1)[:, ::-1][:, :k].sum(-1), 0, 1)
        np.testing.assert_allclose(outside[:, j].numpy(), expected, atol=1e-6)


def test_statistics_do_not_depend_on_the_target():
    """Predictable: the centring and the top-k masses are functions of the logits; only logp and rank see y."""
    rng = np.random.default_rng(3)
    logits = torch.from_numpy(logit_cases(3000, rng))
    n = logits.shape[0]
    first = _target_stats(logits, torch.zeros(n, dtype=torch.int64), ALPHAS, [1, 10])
    second = _target_stats(logits, torch.from_numpy(rng.integers(0, 3000, n)), ALPHAS, [1, 10])
    assert torch.equal(first[2], second[2]) and torch.equal(first[3], second[3])
    assert not torch.equal(first[0], second[0])


@pytest.mark.parametrize("vocab", [100, 4000, 49152, 49157])  # 49157: not a multiple of the block
def test_top_logits_equal_torch_topk(vocab):
    rng = np.random.default_rng(vocab)
    z = torch.from_numpy(logit_cases(vocab, rng))
    z[0, -3:] = 100.0  # the largest values in the remainder that is not a whole block
    for k in (1, 10, 100):
        values, index = _top_logits(z, k)
        assert torch.equal(values, torch.topk(z, k, dim=-1).values)
        assert torch.equal(z.gather(1, index), values)  # indices point at those values (ties: any of them)


def test_description_names_the_approximation():
    assert "histogram" in CENTRING and str(EXACT_TOP) in CENTRING and "clipped" in CENTRING
