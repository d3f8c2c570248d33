"""Block units, the eb method end to end, and the centring c >= a."""

import json

import numpy as np
import pytest
import torch

from tokenbounds.data.shards import open_corpus
from tokenbounds.data.units import ContextRule, exhaustive_block_units
from tokenbounds.models.scorer import _target_stats
from tokenbounds.stats.lambda_grid import default_lambda_grid
from tokenbounds.stats.smoothing import loss_range

from .conftest import EOT, write_shards
from .test_cli_bound import one_line_error, run_cli


@pytest.fixture
def corpus(tmp_path):
    return open_corpus(write_shards(tmp_path / "c", [np.arange(1, 12), np.arange(20, 27), np.array([40, EOT, 41])]))


@pytest.mark.parametrize(("context", "stride"), [(4, 4), (4, 2), (6, 3), (4, 1)])
def test_block_units_cover_every_token_with_the_block_rule(corpus, context, stride):
    seen = []
    for unit in exhaustive_block_units(corpus, context, stride):
        assert unit.tokens[0] == EOT and len(unit.tokens) - 1 <= context
        for j, position in enumerate(unit.positions):
            index = unit.first + j
            assert unit.tokens[index] == corpus.token(int(position))
            # Reference rule: eot, then the tokens from (block start - (context - stride)) clipped to the shard.
            shard, local = (int(x[0]) for x in corpus.locate(np.array([position])))
            begin = (local // stride) * stride
            expected = [EOT, *corpus.shards[shard][max(begin - (context - stride), 0) : local]]
            assert list(unit.tokens[:index]) == expected
            seen.append(int(position))
    assert sorted(seen) == list(range(corpus.n_tokens))


def test_blocks_are_drawn_in_proportion_to_their_length(corpus):
    stride = 4  # shard lengths 11, 7, 3 -> blocks of 4,4,3 | 4,3 | 3 tokens
    rule = ContextRule.block(4, stride)
    units, draws = rule.sample(corpus, 210_000, np.random.default_rng(0))
    lengths = np.array([u.n_targets for u in units])  # distinct units, in corpus order
    assert lengths.tolist() == [4, 4, 3, 4, 3, 3]
    freq = np.bincount(draws, minlength=len(lengths)) / len(draws)
    np.testing.assert_allclose(freq, lengths / lengths.sum(), atol=0.004)


def test_centring_is_at_least_a_on_one_hot_predictions():
    vocab = 50
    logits = torch.full((3, vocab), -1e4)
    logits[torch.arange(3), torch.tensor([0, 7, 49])] = 1e4  # one-hot predictions
    targets = torch.tensor([0, 7, 3])
    alphas = [1e-4, 0.1, 0.5]
    _, rank, entropy, outside = _target_stats(logits, targets, alphas, [1, 2])
    for j, alpha in enumerate(alphas):
        a, _ = loss_range(alpha, vocab)
        # H(q) for a one-hot p is a + (alpha (V-1)/V) log2(...) > a; float32 may round it to a, never below.
        assert torch.all(entropy[:, j] >= a - 1e-5)
        q_top, q_rest = 1 - alpha + alpha / vocab, alpha / vocab
        exact = -(q_top * np.log2(q_top) + (vocab - 1) * q_rest * np.log2(q_rest))
        np.testing.assert_allclose(entropy[:, j].numpy(), exact, rtol=1e-4)
    # Target 3 ties with the 48 other -1e4 logits: they all rank ahead of it (ties count against the model; this
    # asserted 1 before, a top-2 hit for a token the model scored no better than 48 others).
    assert rank.tolist() == [0, 0, vocab - 1]
    np.testing.assert_allclose(outside.numpy(), 0.0, atol=1e-6)


def args_for(model, data, *extra, bits="20"):
    return ["bound", "--model", str(model), "--data", str(data), "--message-bits", bits, "--no-progress", *extra]


def test_eb_block_betting_end_to_end(tiny_gpt2, tiny_corpus, tmp_path, capsys):
    out_block, out_exh, out_lotfi = tmp_path / "block.json", tmp_path / "exh.json", tmp_path / "lotfi.json"
    common = ["--context", "32", "--stride", "16"]
    eb_block = args_for(tiny_gpt2, tiny_corpus, "--method", "eb", "--mode", "block", "--samples", "400", *common)
    code, out, err = run_cli([*eb_block, "--json", str(out_block)], capsys)
    assert code == 0, err
    assert "variance" in out and "betting UCB" in out
    block = json.loads(out_block.read_text())
    assert block["subsample_ucb"] == "betting" and block["stride"] == 16 and "block" in block["context_rule"]
    assert len(block["lambdas"]) == len(default_lambda_grid()) == 42  # (was 20 geometric)
    eb_exh = args_for(tiny_gpt2, tiny_corpus, "--method", "eb", "--mode", "exhaustive", "--rule", "block", *common)
    code, _, err = run_cli([*eb_exh, "--json", str(out_exh)], capsys)
    assert code == 0, err
    exh = json.loads(out_exh.read_text())
    assert exh["timing"]["scored_targets"] == 1550  # every token once under the block rule
    lotfi = args_for(tiny_gpt2, tiny_corpus, "--method", "lotfi", "--mode", "exhaustive", "--rule", "block", *common)
    code, _, err = run_cli([*lotfi, "--json", str(out_lotfi)], capsys)
    assert code == 0, err
    lot = json.loads(out_lotfi.read_text())
    for b, e, lo in zip(block["results"], exh["results"], lot["results"], strict=True):
        # The same hypothesis and rule: sampled and exact empirical risks agree within the subsampling slack
        # (plus the variance term's share, since the slack is for Z, not for the loss alone).
        assert b["empirical"] <= e["empirical"] + b["subsampling_term"] + b["variance_term"] + 1e-9
        assert e["empirical"] == pytest.approx(lo["empirical"])
        assert e["bound"] >= e["empirical"]
        assert b["unit_std"] is not None and e["unit_std"] is None
    # A random model's loss stays close to its own entropy: eb pays that spread, lotfi the whole range.
    for e, lo in zip(exh["results"], lot["results"], strict=True):
        if e["statistic"] == "bits_per_token":
            assert e["bound"] - e["empirical"] < 0.5 * (lo["bound"] - lo["empirical"])


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--method", "eb", "--lambdas", "0.1,1.0"], "lambda"),
        (["--method", "eb", "--lambdas", "0,0.5"], "lambda"),
        (["--mode", "block", "--context", "32", "--stride", "5"], "--stride"),
        (["--mode", "block", "--context", "32", "--stride", "0"], "--stride"),
        (["--mode", "block", "--rule", "document"], "block"),
        (["--mode", "token", "--rule", "block"], "document"),
        (["--subsample-ucb", "maurer-pontil", "--samples", "1"], "maurer-pontil"),
    ],
)
def test_bad_block_and_eb_inputs(tiny_gpt2, tiny_corpus, capsys, extra, needle):
    code, _, err = run_cli(args_for(tiny_gpt2, tiny_corpus, *extra), capsys)
    one_line_error(code, err, needle)


def test_block_larger_than_every_shard(tiny_gpt2, tmp_path, capsys):
    data = write_shards(tmp_path / "small", [np.array([1, 2, 3, EOT]), np.array([4, 5, EOT])])
    code, _, err = run_cli(args_for(tiny_gpt2, data, "--mode", "block", "--context", "8"), capsys)
    one_line_error(code, err, "larger than every shard")
