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
    bin_midpoints,
    binned_smoothed_entropy_bits,
    smoothed_entropy_bits,
    summation_error,
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


def stated_error_bits(probs: np.ndarray, alpha: float) -> np.ndarray:
    """The note's bound on |centring - H(q)|: binning, (1 - alpha) tail 2^-(24 - BIN_SHIFT), plus the float32
    bin sums' rounding, (1 - alpha) gamma (sum over the tail of p k(r p) + the binning error), in bits."""
    vocab = probs.shape[-1]
    ordered = np.sort(probs, -1)[:, ::-1]
    tail_p = ordered[:, EXACT_TOP:]
    x = (1 - alpha) * vocab / alpha * tail_p
    k = np.where(x < 1e-8, 1.0, np.log1p(x) * (1 + 1 / np.maximum(x, 1e-300)))
    tail = tail_p.sum(-1)
    binning = tail * BIN_ERROR_NATS
    return (1 - alpha) * (binning + summation_error(vocab) * ((tail_p * k).sum(-1) + binning)) / LN2 + 1e-9


@pytest.mark.parametrize("vocab", [2, 50, 300, 5000, 49152])
def test_centring_lies_in_range_and_near_the_exact_entropy(vocab):
    rng = np.random.default_rng(vocab)
    probs = softmax(logit_cases(vocab, rng))
    for alpha in ALPHAS:
        a, width = loss_range(alpha, vocab)
        c = binned_smoothed_entropy_bits(probs, alpha)
        assert np.all(c >= a) and np.all(c <= a + width)
        exact = smoothed_entropy_bits(probs, alpha)
        # The stated error (binning and float32 bin sums, centring.py); exact when V <= EXACT_TOP.
        np.testing.assert_array_less(np.abs(c - exact), stated_error_bits(probs, alpha))
        if vocab <= EXACT_TOP:
            np.testing.assert_allclose(c, exact, rtol=0, atol=1e-9)


def test_centring_is_tight_on_lm_like_predictions():
    """Not just within the worst case: on smooth tails the bin errors cancel (1e-4 bits is 1/100 of the bound)."""
    rng = np.random.default_rng(1)
    probs = softmax((rng.standard_normal((20, 49152)) * 2.5).astype(np.float32))
    for alpha in (1e-4, 0.01, 0.5):
        gap = np.abs(binned_smoothed_entropy_bits(probs, alpha) - smoothed_entropy_bits(probs, alpha))
        assert gap.max() < 3e-4


def test_float32_bin_sums_round_within_their_bound():
    """A near-uniform p puts ~V tokens in one bin, the worst case of float32 summation: the centring stays within
    gamma of the float64-summed histogram's binned term, and on LM-like rows the rounding is negligible."""
    vocab = 49152
    rng = np.random.default_rng(5)
    near_uniform = softmax(rng.standard_normal((3, vocab)).astype(np.float32) * 1e-3)
    lm_like = softmax((rng.standard_normal((3, vocab)) * 2.5).astype(np.float32))
    for probs, largest in [(near_uniform, 1e-2), (lm_like, 1e-6)]:
        for alpha in (1e-4, 0.5):
            c = binned_smoothed_entropy_bits(probs, alpha)
            # The same histogram summed in float64 (np.bincount) instead of float32 in token order.
            rate = (1 - alpha) * vocab / alpha
            flat = probs.astype(np.float32)
            top = np.argpartition(-flat, EXACT_TOP - 1, -1)[:, :EXACT_TOP]
            head = np.take_along_axis(probs, top, -1)
            hx = rate * head
            exact_head = np.sum(head * np.log1p(hx) * (1 + 1 / hx), -1)
            np.put_along_axis(flat, top, np.float32(0), -1)
            mids = bin_midpoints()
            weights = np.log1p(rate * mids) * (1 + 1 / np.maximum(rate * mids, 1e-300))
            weights[rate * mids < 1e-8] = 1.0
            binned = np.array([np.bincount(f.view(np.uint32) >> BIN_SHIFT, f, len(mids)) @ weights for f in flat])
            wide = np.log2(vocab / alpha) - (1 - alpha) * (exact_head + binned) / LN2
            gap = np.abs(c - wide)
            assert np.all(gap <= (1 - alpha) * summation_error(vocab) * binned / LN2 + 1e-9)
            assert gap.max() < largest
    assert summation_error(vocab) == pytest.approx((vocab - EXACT_TOP - 1) * 2.0**-24, rel=1e-2)


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
        np.testing.assert_allclose(entropy[:, j].numpy(), binned_smoothed_entropy_bits(probs, alpha), atol=5e-6)
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


@pytest.mark.parametrize("stats", [([], []), (ALPHAS, [1, 5, 100])])  # lotfi's path, eb's (ranks from the top k)
def test_ranks_equal_counting(stats):
    """The rank from the top k (a target above the k-th largest) or by counting the row equals #{z >= z_y} - 1,
    ties at the k-th largest included (the rounded row holds many)."""
    rng = np.random.default_rng(7)
    z = torch.from_numpy(logit_cases(5000, rng))
    order = torch.argsort(z, dim=-1, descending=True)
    for place in (0, 1, 50, 98, 99, 100, 101, 2500, 4999):
        targets = order[:, place]
        _, rank, _, _ = _target_stats(z, targets, *stats)
        expected = (z >= z.gather(1, targets[:, None])).sum(-1) - 1
        assert torch.equal(rank, expected), place
