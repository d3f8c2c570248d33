"""Non-finite numbers and out-of-vocabulary ids never reach a report: each is refused with one clear line."""

import json
import re

import numpy as np
import pytest
import torch

from tokenbounds.cli import main
from tokenbounds.data.prepare import prepare
from tokenbounds.data.shards import open_corpus
from tokenbounds.data.units import Unit
from tokenbounds.data.windows import random_windows
from tokenbounds.errors import UserError
from tokenbounds.models.hf import load_model, load_tokenizer
from tokenbounds.models.scorer import score_units
from tokenbounds.pipeline import BoundRequest, compute_bound
from tokenbounds.report.io import check_finite, write_json
from tokenbounds.stats.smoothing import smoothed_bits
from tokenbounds.stats.unit_sums import StatisticSet, unit_sums

from .conftest import VOCAB, write_shards
from .test_topk_ties import TableModel, V

POISON = 3  # the table model's logits after this token are corrupted


def table_with(row_values: float) -> np.ndarray:
    table = np.random.default_rng(0).normal(size=(V, V))
    table[POISON] = row_values
    return table


def units_with_one_poison() -> list[Unit]:
    """Three units; the only POISON token is at index 2 of the second, so it predicts corpus position 1003."""
    return [
        Unit(np.array([1, 2, 4, 5]), 1, np.array([11, 12, 13])),
        Unit(np.array([1, 2, POISON, 5, 6]), 2, np.array([1002, 1003, 1004])),
        Unit(np.array([7, 8]), 1, np.array([21])),
    ]


@pytest.mark.parametrize(
    ("value", "needle"), [(np.nan, "NaN"), (np.inf, "+inf"), (-np.inf, "only -inf")], ids=["nan", "+inf", "all -inf"]
)
@pytest.mark.parametrize("with_stats", [False, True], ids=["logp only", "eb statistics"])
def test_nonfinite_logits_are_refused_at_their_position(value, needle, with_stats):
    kw = {"alphas": [0.01], "ks": [1, 5]} if with_stats else {}
    with pytest.raises(UserError, match=rf"predicting corpus position 1003 hold .*{re.escape(needle)}") as err:
        score_units(TableModel(table_with(value)), units_with_one_poison(), progress=False, **kw)
    assert "\n" not in str(err.value)


def test_one_nan_logit_is_enough():
    table = np.random.default_rng(0).normal(size=(V, V))
    table[POISON, 17] = np.nan  # not the target's logit: it still poisons the normalisation
    with pytest.raises(UserError, match="1003 hold a NaN logit"):
        score_units(TableModel(table), units_with_one_poison(), progress=False)


def test_minus_inf_logit_is_a_legal_zero_probability():
    """p = 0 for the target: log p = -inf, smoothing makes it finite, the unsmoothed NLL is reported as None."""
    table = np.random.default_rng(0).normal(size=(V, V))
    table[POISON, 5] = -np.inf  # the target after POISON in units_with_one_poison is 5
    scores = score_units(TableModel(table), units_with_one_poison(), alphas=[0.01], ks=[1], progress=False)
    assert np.isneginf(scores.logp).sum() == 1 and np.isfinite(scores.entropy_bits).all()
    assert scores.rank[np.isneginf(scores.logp)][0] == V - 1  # a -inf target ties every -inf and trails the rest
    assert np.isfinite(smoothed_bits(scores.logp, 0.01, V)).all()
    stats = StatisticSet((0.01,), (1,), V, centred=False)

    def nll(keep):
        return unit_sums(stats, [int(keep.sum())], scores.logp[keep], scores.rank[keep]).unsmoothed_nll()

    assert nll(np.ones(len(scores.logp), bool)) == {"mean_nll_bits_unsmoothed": None, "zero_probability_targets": 1}
    finite = nll(np.isfinite(scores.logp))
    assert finite["zero_probability_targets"] == 0 and np.isfinite(finite["mean_nll_bits_unsmoothed"])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_reports_never_hold_nan_or_infinity(tmp_path, value):
    report = {"results": [{"bound": 1.0}, {"bound": value}], "mean_nll_bits_unsmoothed": 2.0}
    path = tmp_path / "r.json"
    with pytest.raises(UserError, match=r"report\.results\[1\]\.bound"):
        write_json(path, report)
    assert not path.exists() and not (tmp_path / "r.json.tmp").exists()
    check_finite({"results": [{"bound": 1.0}], "mean_nll_bits_unsmoothed": None})  # None is fine: JSON null
    write_json(path, {"ok": [1.0, None, 2]})
    assert json.loads(path.read_text()) == {"ok": [1.0, None, 2]}


@pytest.mark.parametrize(
    ("tokens", "first", "needle"),
    [
        ([1, 2, 5, V + 4], 3, r"token id 54 at corpus position 1002 \(a target\)"),
        ([1, V + 4, 2, 5], 3, r"token id 54 at corpus position 1000 \(in the context of the target at 1002\)"),
        ([V, 2, 2, 5], 3, r"token id 50 at corpus position 999 \(in the context"),
    ],
    ids=["target", "context", "first context token"],
)
def test_ids_outside_the_vocabulary_are_refused_before_the_forward_pass(tokens, first, needle):
    positions = np.arange(1002, 1002 + len(tokens) - first)
    units = [Unit(np.array([1, 2]), 1, np.array([5])), Unit(np.array(tokens), first, positions)]
    with pytest.raises(UserError, match=needle):
        score_units(TableModel(np.zeros((V, V))), units, progress=False)


# End to end: a NaN model, and a shard edited after `prepare`, through compute_bound and the CLI.


class PoisonedModel:
    """The tiny GPT-2 with NaN logits wherever the input token is `poison` (a corrupt checkpoint's symptom)."""

    def __init__(self, inner, poison: int):
        self.inner, self.poison = inner, poison
        self.vocab_size, self.max_positions, self.device = inner.vocab_size, inner.max_positions, inner.device
        self.fills_out = False  # its logits are a poisoned copy

    def logits(self, input_ids, keep, out=None):
        poisoned = self.inner.logits(input_ids, keep).clone()
        poisoned[input_ids[:, keep] == self.poison] = float("nan")
        return poisoned

    def describe(self) -> dict:
        return self.inner.describe()


@pytest.mark.parametrize("mode", ["token", "exhaustive"])
@pytest.mark.parametrize("method", ["lotfi", "eb"])
def test_a_nan_model_gets_no_bound(tiny_gpt2, tiny_corpus, monkeypatch, capsys, mode, method):
    inner = load_model(tiny_gpt2)
    monkeypatch.setattr("tokenbounds.hypothesis.open_model", lambda *a, **k: PoisonedModel(inner, poison=17))
    request = BoundRequest(
        model=str(tiny_gpt2), data=str(tiny_corpus), mode=mode, method=method, message_bits=2000.0,
        samples=500, context=16, progress=False,
    )  # fmt: skip
    with pytest.raises(UserError, match=r"corpus position \d+ hold a NaN logit"):
        compute_bound(request)

    if mode == "token" and method == "lotfi":  # and through the CLI: exit 2, one line, no report
        args = ["bound", "--model", str(tiny_gpt2), "--data", str(tiny_corpus), "--message-bits", "2000"]
        code = main([*args, "--context", "16", "--samples", "500", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "NaN logit" in err


WORDS = "the quick brown fox jumps over lazy dog to be or not".split()


@pytest.fixture
def prepared(tiny_tokenizer, tmp_path):
    """A corpus written by `prepare` (with its checksums): 60 short documents in 3+ shards."""
    rng = np.random.default_rng(0)
    source = tmp_path / "docs.jsonl"
    lines = [json.dumps({"text": " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12))))}) for _ in range(60)]
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "shards"
    prepare([source], load_tokenizer(tiny_tokenizer), out, "tiny", shard_tokens=150, progress=False)
    return out


def edit_shard(directory, name="shard_00001.bin", local=7, value=VOCAB + 50):
    path = directory / name
    tokens = np.fromfile(path, dtype="<u2")
    tokens[local] = value
    tokens.tofile(path)


def test_prepare_records_what_verify_checks(prepared):
    corpus = open_corpus(prepared)
    assert len(corpus.shards) >= 3
    verification = corpus.verify(VOCAB, progress=False)
    assert verification["whole_corpus_verified"] and verification["read_tokens_checked"]
    assert f"{len(corpus.shards)} of {len(corpus.shards)} shard(s) re-hashed" in verification["how"]
    assert corpus.verification() == verification  # the record stays with the corpus, for the report
    fresh = open_corpus(prepared)
    assert not fresh.verification()["whole_corpus_verified"] and "--verify-data" in fresh.verification()["how"]
    assert fresh.verification(every_token_read=True)["whole_corpus_verified"]  # exhaustive mode checked every id


@pytest.mark.parametrize("value", [VOCAB + 50, 4], ids=["id >= V", "a valid id"])
def test_verify_refuses_an_edited_shard(prepared, value):
    edit_shard(prepared, value=value)
    with pytest.raises(UserError, match=r"^shard_00001\.bin changed after prepare \(checksum mismatch\)") as err:
        open_corpus(prepared).verify(VOCAB, progress=False)
    if value >= VOCAB:
        assert f"token id {value} at shard_00001.bin, token 7" in str(err.value)


def test_verify_scans_ids_where_there_is_no_checksum(tmp_path):
    directory = write_shards(tmp_path / "c", [np.array([1, 2, 299]), np.array([4, 5, 6, 299])])
    open_corpus(directory).verify(VOCAB, progress=False)  # conftest writes no sha256: scanned only
    edit_shard(directory, local=2, value=VOCAB)
    with pytest.raises(UserError, match=r"^shard_00001\.bin: token id 300 at shard_00001\.bin, token 2"):
        open_corpus(directory).verify(VOCAB, progress=False)


@pytest.mark.parametrize("mode", ["token", "exhaustive"])
def test_an_edited_shard_is_refused_in_every_mode(tiny_gpt2, prepared, capsys, mode):
    edit_shard(prepared)
    args = ["bound", "--model", str(tiny_gpt2), "--data", str(prepared), "--message-bits", "2000"]
    code = main([*args, "--context", "16", "--samples", "3000", "--mode", mode, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"token id {VOCAB + 50} at corpus position" in err and "outside the model's vocabulary" in err


def test_training_windows_check_every_id(prepared):
    edit_shard(prepared)
    corpus = open_corpus(prepared)
    rng = np.random.default_rng(0)
    random_windows(corpus, 50, 20, rng)  # no vocabulary known: nothing to check against
    with pytest.raises(UserError, match=rf"token id {VOCAB + 50} at shard_00001\.bin, token 7 \(corpus position"):
        random_windows(corpus, 200, 20, rng, vocab_size=VOCAB)
    corpus.check_vocab(VOCAB)  # meta.json's max id is below V: accepted, and V is kept for later reads
    with pytest.raises(UserError, match=r"shard_00001\.bin, token 7"):
        random_windows(corpus, 200, 20, rng)


def test_torch_reference_for_table_model():
    """The table model used above is what it claims: logits at j are table[input_ids[j]]."""
    table = np.random.default_rng(0).normal(size=(V, V))
    out = TableModel(table).logits(torch.tensor([[1, 2, 3]]), torch.tensor([0, 2]))
    assert torch.equal(out[0], torch.as_tensor(table[[1, 3]], dtype=torch.float32))


def test_a_raw_file_is_scanned_whole_at_open(tmp_path):
    raw = tmp_path / "x.bin"
    np.array([1, 2, 299, 4], dtype="<u2").tofile(raw)
    corpus = open_corpus(raw, "uint16", eot=299)
    assert not corpus.verification()["whole_corpus_verified"]
    corpus.check_vocab(VOCAB)  # no meta.json: its max id is found by reading every token
    assert corpus.verification()["whole_corpus_verified"]
