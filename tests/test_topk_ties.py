"""Top-k error counts ties against the model: the scorer's rank is stats.topk.pessimistic_rank, on any logits."""

import numpy as np
import pytest
import torch

from tokenbounds.data.units import Unit
from tokenbounds.models.scorer import score_units
from tokenbounds.stats.topk import pessimistic_rank, topk_error


class TableModel:
    """A LogitModel whose logits at position j are row input_ids[j] of a fixed (V, V) table: ties on demand."""

    max_positions, fills_out = None, False

    def __init__(self, table: np.ndarray):
        self.table = torch.as_tensor(table, dtype=torch.float32)
        self.vocab_size = self.table.shape[1]

    def logits(self, input_ids: torch.Tensor, keep: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return self.table[input_ids[:, keep]]

    def describe(self) -> dict:
        return {"kind": "table"}


V = 50


def random_units(rng: np.random.Generator, n: int = 30) -> list[Unit]:
    units = []
    for i in range(n):
        tokens = rng.integers(0, V, size=int(rng.integers(2, 12)))
        first = int(rng.integers(1, len(tokens)))
        units.append(Unit(tokens, first, np.arange(first, len(tokens)) + 100 * i))
    return units


def expected_ranks(table: np.ndarray, units: list[Unit]) -> np.ndarray:
    """Each target y = tokens[i] is predicted from the logits row of the token before it, by the numpy rule."""
    rows = np.concatenate([u.tokens[u.first - 1 : -1] for u in units])
    targets = np.concatenate([u.tokens[u.first :] for u in units])
    return pessimistic_rank(table[rows], targets)


TABLES = {
    "constant": lambda rng: np.zeros((V, V)),
    "tied": lambda rng: rng.integers(0, 3, size=(V, V)).astype(np.float64),  # 3 levels: ties everywhere
    "rounded": lambda rng: np.round(rng.normal(size=(V, V)), 1),  # like bf16 logits: near values collide
    "random": lambda rng: rng.normal(size=(V, V)),
    "with -inf": lambda rng: np.where(rng.random((V, V)) < 0.3, -np.inf, rng.integers(0, 2, size=(V, V))),
}


@pytest.mark.parametrize("name", list(TABLES))
def test_scorer_rank_is_the_pessimistic_rank(name):
    rng = np.random.default_rng(0)
    table = TABLES[name](rng)
    np.fill_diagonal(table, 0.0)  # every row keeps a finite logit (an all -inf row is refused, tested elsewhere)
    units = random_units(rng)
    scores = score_units(TableModel(table), units, ks=[1, 5], max_tokens=40, progress=False)
    assert np.array_equal(scores.rank, expected_ranks(table, units))


def test_constant_logits_never_hit():
    """A model that predicts nothing (all logits equal) has top-k error 1 for every k < V, not 0."""
    rng = np.random.default_rng(1)
    units = random_units(rng)
    scores = score_units(TableModel(np.zeros((V, V))), units, progress=False)
    assert np.all(scores.rank == V - 1)
    for k in (1, 10, V - 1):
        assert topk_error(scores.rank, k).mean() == 1.0
    assert topk_error(scores.rank, V).mean() == 0.0  # the top V is every token


def test_a_tie_with_the_target_is_a_miss():
    table = np.zeros((V, V))
    table[:, 7] = table[:, 8] = 1.0  # tokens 7 and 8 tie for the top
    units = [Unit(np.array([0, 7, 8]), 1, np.array([1, 2]))]
    scores = score_units(TableModel(table), units, progress=False)
    assert scores.rank.tolist() == [1, 1]  # either one counts the other ahead of it
    assert topk_error(scores.rank, 1).tolist() == [1.0, 1.0]
    assert topk_error(scores.rank, 2).tolist() == [0.0, 0.0]
