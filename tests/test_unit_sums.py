"""Per-unit sums (stats/unit_sums.py) and the streaming plan that produces them (execution.py).

The sums must equal the per-target computation they replace; exhaustive scoring must keep O(1) memory in the corpus
size; and a sampled unit's sums must not depend on which other units share its batch beyond what the fixed global
plan decides.
"""

import tracemalloc

import numpy as np
import pytest

from tokenbounds.data.units import Unit
from tokenbounds.execution import score_plan
from tokenbounds.models.scorer import plan_batches, score_units
from tokenbounds.stats.smoothing import smoothed_bits
from tokenbounds.stats.topk import topk_error
from tokenbounds.stats.unit_sums import StatisticSet, unit_sums

from .test_topk_ties import TableModel, V, random_units

ALPHAS, KS = (0.01, 0.1), (1, 5)


def naive(stats: StatisticSet, n_targets, logp, rank, entropy, outside):
    """Loop over units and targets: the definitions in the module docstring, written out."""
    rows, start = [], 0
    for n in n_targets:
        t = slice(start, start + n)
        start += n
        loss = [smoothed_bits(logp[t], a, stats.vocab_size) for a in stats.alphas]
        loss += [topk_error(rank[t], k) for k in stats.ks]
        low = [a for a, _ in stats.ranges()]
        width = [d for _, d in stats.ranges()]
        centring = np.concatenate([entropy[t], outside[t]], axis=1)
        cent = [np.clip(centring[:, j], low[j], low[j] + width[j]) for j in range(stats.size)]
        rows.append(
            (
                [sum(x) for x in loss],
                [sum(x * x) for x in loss],
                [sum(((c - x) / w) ** 2) for c, x, w in zip(cent, loss, width, strict=True)],
                sum(v for v in logp[t] if np.isfinite(v)),
                sum(1 for v in logp[t] if not np.isfinite(v)),
            )
        )
    return rows


def test_unit_sums_are_the_per_target_definitions():
    rng = np.random.default_rng(1)
    n_targets = rng.integers(1, 9, size=40)
    total = int(n_targets.sum())
    logp = np.log(rng.dirichlet(np.ones(V), size=total)[:, 0])
    logp[3] = -np.inf  # a legal p = 0
    rank = rng.integers(0, V, size=total)
    entropy = rng.uniform(-0.01, 6.0, size=(total, len(ALPHAS)))  # below a: the scorer's rounding, clipped
    outside = rng.uniform(-1e-7, 1.0, size=(total, len(KS)))
    stats = StatisticSet(ALPHAS, KS, V, centred=True)
    sums = unit_sums(stats, n_targets, logp, rank, entropy, outside)
    for u, (loss, sq, cent, log_p, zero) in enumerate(naive(stats, n_targets, logp, rank, entropy, outside)):
        np.testing.assert_allclose(sums.loss[u], loss, rtol=1e-12)
        np.testing.assert_allclose(sums.loss_sq[u], sq, rtol=1e-12)
        np.testing.assert_allclose(sums.centred_sq[u], cent, rtol=1e-10, atol=1e-15)
        assert sums.log_p[u] == pytest.approx(log_p, rel=1e-12) and sums.zero_p[u] == zero
    assert sums.unsmoothed_nll() == {"mean_nll_bits_unsmoothed": None, "zero_probability_targets": 1}
    # Totals are additive: the total of two halves is the total of the whole.
    sizes = [3, 1, 36]  # consecutive groups of units are one row each, with the sums of their units
    merged = sums.merge_consecutive(sizes)
    np.testing.assert_allclose(merged.loss[0], sums.loss[:3].sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.centred_sq[2], sums.centred_sq[4:].sum(axis=0), rtol=1e-12)
    assert merged.n_targets.tolist() == [n_targets[:3].sum(), n_targets[3], n_targets[4:].sum()]
    with pytest.raises(ValueError, match="cover every row"):
        sums.merge_consecutive([3, 1])
    half = len(n_targets) // 2
    cut = int(n_targets[:half].sum())
    first = unit_sums(stats, n_targets[:half], logp[:cut], rank[:cut], entropy[:cut], outside[:cut])
    second = unit_sums(stats, n_targets[half:], logp[cut:], rank[cut:], entropy[cut:], outside[cut:])
    np.testing.assert_allclose((first.total() + second.total()).loss, sums.total().loss, rtol=1e-12)
    # The spread of the targets' losses, from the sums, is the population std of the targets.
    all_loss = smoothed_bits(logp, ALPHAS[0], V)
    assert sums.target_std(0) == pytest.approx(float(np.std(all_loss)), rel=1e-9)


def test_unit_sums_refuse_arrays_that_do_not_match_the_units():
    stats = StatisticSet((0.1,), (), V, centred=False)
    with pytest.raises(ValueError, match="one entry per target"):
        unit_sums(stats, [2, 2], np.zeros(3), np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=">= 1 target"):
        unit_sums(stats, [0, 3], np.zeros(3), np.zeros(3, dtype=np.int64))


def table(seed=0):
    rng = np.random.default_rng(seed)
    return np.round(rng.normal(size=(V, V)), 1)  # ties, like rounded logits


@pytest.mark.parametrize("exhaustive", [False, True])
def test_score_plan_matches_per_target_scoring(exhaustive, one_torch_thread):
    model = TableModel(table())
    units = random_units(np.random.default_rng(2), n=60)
    stats = StatisticSet(ALPHAS, KS, V, centred=True)
    scored = score_plan(model, units, stats, exhaustive=exhaustive, max_tokens=40, progress=False)
    flat = score_units(model, units, alphas=list(ALPHAS), ks=list(KS), max_tokens=40, progress=False)
    n_targets = [u.n_targets for u in units]
    expect = unit_sums(stats, n_targets, flat.logp, flat.rank, flat.entropy_bits, flat.outside_topk)
    if exhaustive:
        expect = expect.total()
    assert len(scored.sums) == (1 if exhaustive else len(units))
    np.testing.assert_array_equal(scored.sums.n_targets, expect.n_targets)
    np.testing.assert_allclose(scored.sums.loss, expect.loss, rtol=1e-12)
    np.testing.assert_allclose(scored.sums.centred_sq, expect.centred_sq, rtol=1e-12)
    assert scored.scored_targets == sum(n_targets)


def test_the_batch_plan_is_fixed_by_units_and_settings():
    units = random_units(np.random.default_rng(3), n=50)
    plans = [[b.unit_ids.tolist() for b in plan_batches(units, V, max_tokens=40, buffer_units=16)] for _ in range(2)]
    assert plans[0] == plans[1]
    assert sorted(i for batch in plans[0] for i in batch) == list(range(50))  # every unit once
    # Buffers never mix: a unit is batched only with units of its own buffer of 16.
    assert all(len({i // 16 for i in batch}) == 1 for batch in plans[0])


def test_exhaustive_scoring_keeps_no_per_target_array(one_torch_thread):
    """Exhaustive scoring's memory does not grow with the number of targets (kept per target, it grew 44 bytes each)."""
    model = TableModel(table())
    stats = StatisticSet(ALPHAS, KS, V, centred=True)

    def peak_scoring(n_blocks: int) -> int:
        rng = np.random.default_rng(4)
        units = (  # a lazy corpus of blocks of 400 targets
            Unit(rng.integers(0, V, size=401), 1, np.arange(400, dtype=np.int64) + 400 * i) for i in range(n_blocks)
        )
        tracemalloc.start()
        scored = score_plan(model, units, stats, exhaustive=True, max_tokens=1024, buffer_units=8, progress=False)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert scored.scored_targets == 400 * n_blocks
        return peak

    peak_scoring(4)  # imports and caches
    small, large = peak_scoring(20), peak_scoring(80)
    growth = (large - small) / (60 * 400)
    assert growth < 2, f"{growth:.1f} bytes more per extra target: a per-target array is being kept"
