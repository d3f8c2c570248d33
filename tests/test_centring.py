"""The shipped eb centrings: in [a, a + Delta] and [0, 1], functions of the prediction only, within their stated
distance of the exact entropy and top-k mass, and the scorer's torch code equal to its numpy reference
(stats/centring.py)."""

import numpy as np
import pytest
import torch

from tokenbounds.models.scorer import GROUP_ROWS, Workspace, _target_stats
from tokenbounds.stats.centring import (
    BIN_SHIFT,
    CENTRING,
    TOPK_FLOOR,
    bin_midpoints,
    binned_outside_topk,
    binned_smoothed_entropy_bits,
    smoothed_entropy_bits,
    summation_error,
)
from tokenbounds.stats.smoothing import LN2, loss_range

ALPHAS = [1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9]
BIN_ERROR_NATS = 2.0 ** -(24 - BIN_SHIFT)  # per unit of mass outside the most probable token (centring.py)
KS = [1, 2, 5, 10, 100]


def logit_cases(vocab: int, rng: np.random.Generator) -> np.ndarray:
    """Random, spread, peaked, tied, one-hot, uniform, and -inf-holding rows of logits."""
    rows = [
        rng.standard_normal(vocab) * 3,
        rng.standard_normal(vocab) * 0.3,
        np.where(np.arange(vocab) < 3, 25.0, rng.standard_normal(vocab)),  # three tokens hold nearly everything
        np.round(rng.standard_normal(vocab) * 2),  # many ties (-0.0 and +0.0 among them), at the top too
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
    """The note's bound on |centring - H(q)|: binning, (1 - alpha) (1 - p_top) 2^-(24 - BIN_SHIFT), plus the float32
    bin sums' rounding, (1 - alpha) gamma (sum over every token of p k(r p) + the binning error), in bits."""
    vocab = probs.shape[-1]
    x = (1 - alpha) * vocab / alpha * probs
    k = np.where(x < 1e-8, 1.0, np.log1p(x) * (1 + 1 / np.maximum(x, 1e-300)))
    binning = (1 - probs.max(-1)) * BIN_ERROR_NATS
    return (1 - alpha) * (binning + summation_error(vocab) * ((probs * k).sum(-1) + binning)) / LN2 + 1e-9


def exact_outside(probs: np.ndarray, k: int) -> np.ndarray:
    return np.clip(1 - np.sort(probs, -1)[:, ::-1][:, :k].sum(-1), 0, 1)


def stated_outside_error(probs: np.ndarray, k: int) -> np.ndarray:
    """The note's bound on |top-k centring - exact|: 2^-(23 - BIN_SHIFT) x the mass of tokens 2..k, the float32 bin
    sums' rounding (gamma of the whole mass of the bins read, p_top's bin included), the floor, and float64 dust."""
    ordered = np.sort(probs, -1)[:, ::-1]
    second_to_k = ordered[:, 1:k].sum(-1)
    gamma = summation_error(probs.shape[-1])
    rounding = gamma * (ordered[:, 0] + 2 * second_to_k) if k > 1 else 0.0
    return 2.0 ** -(23 - BIN_SHIFT) * second_to_k + rounding + (k - 1) * TOPK_FLOOR + 1e-7


@pytest.mark.parametrize("vocab", [2, 50, 300, 5000, 49152])
def test_centring_lies_in_range_and_near_the_exact_entropy(vocab):
    rng = np.random.default_rng(vocab)
    probs = softmax(logit_cases(vocab, rng))
    for alpha in ALPHAS:
        a, width = loss_range(alpha, vocab)
        c = binned_smoothed_entropy_bits(probs, alpha)
        assert np.all(c >= a) and np.all(c <= a + width)
        exact = smoothed_entropy_bits(probs, alpha)
        # The stated error (binning and float32 bin sums, centring.py).
        np.testing.assert_array_less(np.abs(c - exact), stated_error_bits(probs, alpha))


@pytest.mark.parametrize("vocab", [2, 50, 300, 5000, 49152])
def test_topk_centring_lies_in_range_and_near_the_exact_mass(vocab):
    rng = np.random.default_rng(vocab + 7)
    probs = softmax(logit_cases(vocab, rng))
    outside = binned_outside_topk(probs, KS)
    assert np.all(outside >= 0) and np.all(outside <= 1)
    for j, k in enumerate(KS):
        np.testing.assert_array_less(np.abs(outside[:, j] - exact_outside(probs, k)), stated_outside_error(probs, k))
        if k == 1 or k >= vocab:  # p_top is exact; nothing is outside the whole vocabulary
            np.testing.assert_allclose(outside[:, j], exact_outside(probs, k), rtol=0, atol=1e-7)


def test_centring_is_tight_on_lm_like_predictions():
    """Not just within the worst case (0.0113 bits): on smooth tails the bin errors partly cancel."""
    rng = np.random.default_rng(1)
    probs = softmax((rng.standard_normal((20, 49152)) * 2.5).astype(np.float32))
    for alpha in (1e-4, 0.01, 0.5):
        gap = np.abs(binned_smoothed_entropy_bits(probs, alpha) - smoothed_entropy_bits(probs, alpha))
        assert gap.max() < 1e-3


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
            # The same histogram summed in float64 (np.bincount), the top token left out, instead of float32 in
            # token order with p_top subtracted from its bin afterwards.
            rate = (1 - alpha) * vocab / alpha
            flat = probs.astype(np.float32)
            top = flat.max(-1).astype(np.float64)
            exact_top = top * np.log1p(rate * top) * (1 + 1 / (rate * top))
            np.put_along_axis(flat, flat.argmax(-1)[:, None], np.float32(0), -1)
            mids = bin_midpoints()
            weights = np.log1p(rate * mids) * (1 + 1 / np.maximum(rate * mids, 1e-300))
            weights[rate * mids < 1e-8] = 1.0
            binned = np.array([np.bincount(f.view(np.uint32) >> BIN_SHIFT, f, len(mids)) @ weights for f in flat])
            wide = np.log2(vocab / alpha) - (1 - alpha) * (exact_top + binned) / LN2
            gap = np.abs(c - wide)
            with_top = binned + exact_top * weights.max()  # the bins' whole mass, p_top included, at most
            assert np.all(gap <= (1 - alpha) * summation_error(vocab) * with_top / LN2 + 1e-9)
            assert gap.max() < largest
    assert summation_error(vocab) == pytest.approx((vocab - 1) * 2.0**-24, rel=1e-2)


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
    _, _, entropy, outside = _target_stats(logits, torch.zeros(len(z), dtype=torch.int64), ALPHAS, KS)
    for j, alpha in enumerate(ALPHAS):
        np.testing.assert_allclose(entropy[:, j].numpy(), binned_smoothed_entropy_bits(probs, alpha), atol=5e-6)
        a, width = loss_range(alpha, vocab)
        assert torch.all(entropy[:, j] >= np.float32(a)) and torch.all(entropy[:, j] <= np.float32(a + width))
    np.testing.assert_allclose(outside.numpy(), binned_outside_topk(probs, KS), atol=1e-6)


def test_statistics_do_not_depend_on_the_target():
    """Predictable: the centring and the top-k masses are functions of the logits; only logp and rank see y."""
    rng = np.random.default_rng(3)
    # Not even through rounding: 49,152 tokens per row put a few within an ulp of a bin edge, where p computed
    # relative to the target's logit (rounding that depends on y) would move them across it.
    logits = torch.from_numpy(np.concatenate([logit_cases(49152, rng), logit_cases(49152, rng)]))
    n = logits.shape[0]
    first = _target_stats(logits, torch.zeros(n, dtype=torch.int64), ALPHAS, [1, 10])
    for _ in range(3):
        other = _target_stats(logits, torch.from_numpy(rng.integers(0, 49152, n)), ALPHAS, [1, 10])
        assert torch.equal(first[2], other[2]) and torch.equal(first[3], other[3])
        assert not torch.equal(first[0], other[0])


def test_description_names_the_approximation():
    assert "histogram" in CENTRING and "most probable token" in CENTRING and "top-k" in CENTRING
    assert "clipped" in CENTRING


@pytest.mark.parametrize("stats", [([], []), (ALPHAS, [1, 5, 100])])  # lotfi's path, eb's
def test_ranks_equal_counting(stats):
    """The rank, V - 1 less the float32 count of logits below z_y, equals #{z >= z_y} - 1: ties (the rounded row
    holds many, -0.0 and +0.0 among them), targets at -inf (a third of one row), and a target at +0.0 facing -0.0
    logits."""
    rng = np.random.default_rng(7)
    z = torch.from_numpy(logit_cases(5000, rng))
    signed_zeros = torch.where(torch.arange(5000) % 2 == 0, -0.0, 0.0)[None].float()
    z = torch.cat([z, signed_zeros])
    order = torch.argsort(z, dim=-1, descending=True)
    for place in (0, 1, 50, 98, 99, 100, 101, 2500, 4999):
        targets = order[:, place]
        _, rank, _, _ = _target_stats(z, targets, *stats)
        expected = (z >= z.gather(1, targets[:, None])).sum(-1) - 1
        assert torch.equal(rank, expected), place
    assert torch.equal(_target_stats(z, torch.ones(len(z), dtype=torch.int64), *stats)[1][-1:], torch.tensor([4999]))


@pytest.mark.parametrize("stats", [([], []), (ALPHAS, [1, 5, 100])])  # lotfi's path, eb's
def test_log_probabilities_equal_float64_log_softmax(stats):
    """log p(y) to float32 accuracy on both paths: lotfi's from sum_v exp(z_v - z_y), falling back to the
    max-shifted sum where that would overflow (targets 60 to 300 nats below the top), eb's max-shifted."""
    rng = np.random.default_rng(11)
    vocab = 5000
    rows = [logit_cases(vocab, rng)]
    for gap in (60.0, 75.0, 100.0, 300.0):
        row = rng.standard_normal((1, vocab)).astype(np.float32)
        row[0, :40] += 30.0  # many tokens near the top, so the shifted sum overflows float32 for gaps over ~80
        row[0, -1] = row[0].max() - gap
        rows.append(row)
    z = torch.from_numpy(np.concatenate(rows))
    order = torch.argsort(z, dim=-1, descending=True)
    exact_all = torch.log_softmax(z.double(), dim=-1)
    for targets in (order[:, 0], order[:, 7], order[:, -1], torch.full((len(z),), vocab - 1)):
        logp = _target_stats(z, targets, *stats)[0].double()
        exact = exact_all.gather(1, targets[:, None])[:, 0]
        finite = torch.isfinite(exact)
        assert torch.equal(torch.isfinite(logp), finite)  # -inf exactly where the target's p is 0
        assert torch.all((logp[finite] - exact[finite]).abs() <= 2e-6 * exact[finite].abs().clamp_min(1.0))


def test_a_reused_workspace_changes_no_bit():
    """A run reuses one workspace for all its batches: scratch left by a larger call, another vocabulary or a
    non-finite row must not reach the next call's statistics (every buffer is rewritten before it is read)."""
    rng = np.random.default_rng(13)
    space = Workspace()
    cases = [(GROUP_ROWS + 40, 5000), (37, 5000), (1, 5000), (9, 300), (GROUP_ROWS + 40, 5000)]
    for n, vocab in cases:
        z = np.concatenate([logit_cases(vocab, rng) for _ in range(n // 8 + 1)])[:n]
        if n == 37:
            z[5, 7] = np.nan  # refused by the caller; its chunk takes the non-finite path
        logits, targets = torch.from_numpy(z), torch.from_numpy(rng.integers(0, vocab, n))
        for stats in [([], []), (ALPHAS, KS)]:
            fresh = _target_stats(logits, targets, *stats)
            reused = _target_stats(logits, targets, *stats, space)
            for a, b in zip(fresh, reused, strict=True):
                assert (a is None and b is None) or torch.equal(a.nan_to_num(), b.nan_to_num()), (n, vocab)
