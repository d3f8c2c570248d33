"""The units score exactly data[i] with exactly the context the document rule prescribes."""

import numpy as np
import pytest

from tokenbounds.data.shards import open_corpus
from tokenbounds.data.units import exhaustive_units, sample_positions, token_unit
from tokenbounds.errors import UserError

from .conftest import EOT, write_shards


def reference_context(shard: np.ndarray, local: int, context: int, eot: int) -> list[int]:
    """The rule written the slow, obvious way: walk back from i, stop after an eot or L tokens."""
    ctx = []
    j = local - 1
    while len(ctx) < context:
        if j < 0:
            ctx.append(eot)  # the virtual eot before the shard
            break
        ctx.append(int(shard[j]))
        if shard[j] == eot:
            break
        j -= 1
    return ctx[::-1]


@pytest.fixture
def corpus(tmp_path):
    # Shard 0 starts mid-document-free, has an eot at 3 and ends with an eot; shard 1 has consecutive eots.
    shard0 = np.array([5, 6, 7, EOT, 8, 9, 10, 11, 12, 13, EOT])
    shard1 = np.array([20, EOT, EOT, 21, 22, 23, 24, 25, 26, 27, 28, 29])
    return open_corpus(write_shards(tmp_path / "c", [shard0, shard1]))


@pytest.mark.parametrize("context", [1, 2, 3, 5, 50])
def test_token_unit_targets_and_contexts_everywhere(corpus, context):
    for position in range(corpus.n_tokens):
        unit = token_unit(corpus, position, context)
        shard_index, local = (int(x[0]) for x in corpus.locate(np.array([position])))
        shard = corpus.shards[shard_index]
        assert unit.tokens[unit.first] == shard[local] == corpus.token(position)
        assert list(unit.positions) == [position]
        assert list(unit.tokens[: unit.first]) == reference_context(shard, local, context, EOT)


def test_named_edge_cases(corpus):
    # Shard start (global 0 and 11): context is the virtual eot alone.
    for start in (0, 11):
        unit = token_unit(corpus, start, 8)
        assert list(unit.tokens) == [EOT, corpus.token(start)]
    # Right after an eot (global 4): context is that eot.
    assert list(token_unit(corpus, 4, 8).tokens) == [EOT, 8]
    # Last token of a shard (global 10 is an eot, 22 is the corpus end).
    assert token_unit(corpus, 10, 3).tokens[-1] == EOT
    assert list(token_unit(corpus, 22, 3).tokens) == [26, 27, 28, 29]


@pytest.mark.parametrize("context", [1, 2, 4, 50])
def test_exhaustive_covers_every_token_once_with_the_same_contexts(corpus, context):
    seen = []
    for unit in exhaustive_units(corpus, context):
        assert len(unit.tokens) - 1 <= context  # never more than L tokens of input
        for j, position in enumerate(unit.positions):
            index = unit.first + j
            assert unit.tokens[index] == corpus.token(int(position))
            # Target `index` sees tokens[:index]: exactly its own document-rule context.
            expected = token_unit(corpus, int(position), context)
            assert list(unit.tokens[:index]) == list(expected.tokens[:-1])
            seen.append(int(position))
    assert sorted(seen) == list(range(corpus.n_tokens))


def test_sampler_is_seeded_uniform_and_refuses_nonpositive(corpus):
    a = sample_positions(corpus, 50_000, np.random.default_rng(3))
    b = sample_positions(corpus, 50_000, np.random.default_rng(3))
    assert np.array_equal(a, b)
    counts = np.bincount(a, minlength=corpus.n_tokens)
    assert counts.min() > 0.8 * 50_000 / corpus.n_tokens  # every position, both shards, about equally often
    with pytest.raises(UserError):
        sample_positions(corpus, 0, np.random.default_rng(0))
