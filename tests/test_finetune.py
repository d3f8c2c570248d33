"""`study finetune`: the dialogue corpus, the delta description, fine-tuning from given free parameters, and the
study end to end (smallest size, and a pair of tiny local Hugging Face checkpoints): each row priced by its own
complete description, the evaluated hypothesis the priced one, the best row paid for, resumed row by row."""

import json
import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from tokenbounds.cli import main
from tokenbounds.compress import message as msg
from tokenbounds.compress.delta import apply_delta, code_delta, verify_delta_model, write_delta_model
from tokenbounds.compress.quantize import quantize_tensors
from tokenbounds.compress.quantized_dir import load_quantized
from tokenbounds.data.dialogue import dialogues, is_speaker, render_chat, speech
from tokenbounds.errors import UserError
from tokenbounds.pipeline import compute_bound
from tokenbounds.studies import building, finetune, runner
from tokenbounds.studies.finetune import finetune_study
from tokenbounds.studies.finetune_sizes import SIZES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALLEST = ["study", "finetune", "--size", "smallest", "--no-progress"]

PLAY = """THE TEMPEST

ACT I.

SCENE I. On a ship at sea.

[Enter a Shipmaster and a Boatswain.]

MASTER.
Boatswain!

BOATSWAIN.
Here, master: what cheer?

First Lord.
Good, speak to the mariners:
[Aside.] fall to't yarely.

SCENE II. The island.

Mir.
If by your art, my dearest father,
you have put the wild waters in this roar.

PROSPERO
Be collected.

A single line of verse, not a speech.

Gon.
Nay, good, be patient.
"""


def test_speakers_turns_and_dialogues_from_a_play():
    assert all(map(is_speaker, ["HAMLET.", "KING OF FRANCE.", "Ham.", "First Serv.", "HELENA", "Lady M."]))
    assert not any(map(is_speaker, ["ACT I.", "SCENE II. Rome.", "[Exit.]", "Stay, though thou kill me.", ""]))
    assert speech("First Lord.\nGood, speak\n[Aside.] fall to't.\n[Exit.]\n[Enter") == "Good, speak\nfall to't."
    assert speech("Boatswain!") is None and speech("[Enter MASTER.]\nand others") is None
    # a scene heading ends a dialogue; the lone verse line is no turn; at most max_turns per dialogue
    assert dialogues(PLAY, max_turns=8) == [
        ["Boatswain!", "Here, master: what cheer?", "Good, speak to the mariners:\nfall to't yarely."],
        ["If by your art, my dearest father,\nyou have put the wild waters in this roar.", "Be collected.",
         "Nay, good, be patient."],
    ]  # fmt: skip
    assert [len(d) for d in dialogues(PLAY, max_turns=2)] == [2, 2]  # (a lone last turn is no dialogue)
    assert dialogues("From fairest creatures we desire increase,\nThat thereby beauty's rose might never die,", 8) == []
    assert render_chat(["Boatswain!", "Here."]) == (
        "<|im_start|>user\nBoatswain!<|im_end|>\n<|im_start|>assistant\nHere.<|im_end|>\n"
    )


def quantized_message(z: np.ndarray, levels: int = 16, config: bytes = b'{"spec": 1}') -> bytes:
    return msg.encode(quantize_tensors({"z": z}, levels, select=".*", config=config))


def test_the_delta_description_decodes_to_base_plus_delta(tmp_path):
    rng = np.random.default_rng(0)
    base_message = quantized_message(rng.normal(size=300).astype(np.float32))
    z_base = msg.decode(base_message).dequantize()
    tuned = {"z": z_base["z"] + 0.01 * rng.normal(size=300).astype(np.float32)}
    coded = code_delta(z_base, tuned, levels=16)
    spec, values = apply_delta(base_message, coded)
    delta_hat = msg.decode(coded).dequantize()["z"]
    assert spec == b'{"spec": 1}' and values["z"].dtype == np.float32
    assert np.array_equal(values["z"], z_base["z"] + delta_hat)  # exactly what the two messages say
    assert np.abs(values["z"] - tuned["z"]).max() <= 0.5 * np.ptp(tuned["z"] - z_base["z"]) / 15 * 1.01 + 1e-6
    manifest = write_delta_model(tmp_path / "d", base_message, coded)
    assert (
        manifest["message_bits"]
        == 8 * (len(base_message) + len(coded))
        == manifest["base_bits"] + manifest["delta_bits"]
    )
    assert verify_delta_model(tmp_path / "d") == manifest
    with pytest.raises(UserError, match="exists"):
        write_delta_model(tmp_path / "d", base_message, coded)
    with pytest.raises(UserError, match="other tensors"):
        apply_delta(base_message, msg.encode(quantize_tensors({"w": tuned["z"]}, 4, select=".*")))


def tampered(tmp_path, name: str, base_message: bytes, coded: bytes, change):
    directory = tmp_path / name
    write_delta_model(directory, base_message, coded)
    change(directory)
    with pytest.raises(UserError, match="refusing to bound it|not a complete"):
        verify_delta_model(directory)


def test_a_delta_directory_that_disagrees_with_its_messages_is_refused(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1)
    z = rng.normal(size=100).astype(np.float32)
    base_message = quantized_message(z)
    coded = code_delta(msg.decode(base_message).dequantize(), {"z": z}, levels=4)
    other = quantized_message(z, levels=8)
    tampered(
        tmp_path, "weights", base_message, coded, lambda d: save_file({"z": z}, str(d / "free_parameters.safetensors"))
    )
    tampered(tmp_path, "spec", base_message, coded, lambda d: (d / "spec.json").write_bytes(b'{"spec": 2}'))
    tampered(tmp_path, "base", base_message, coded, lambda d: (d / "base.tbqm").write_bytes(other))
    tampered(tmp_path, "gone", base_message, coded, lambda d: (d / "delta.tbqm").unlink())


def test_training_starts_from_the_given_free_parameters_and_resumes_only_from_them(tmp_path):
    import torch

    from tokenbounds.data.shards import open_corpus
    from tokenbounds.train.trainer import TrainConfig, train

    cfg = SIZES["smallest"]
    spec = finetune.study_spec(cfg)
    finetune._prepared(tmp_path / "data", finetune.shakespeare_path())
    corpus = open_corpus(tmp_path / "data")
    start = {"z": torch.full((cfg.subspace_dim,), 0.05)}
    one_step = TrainConfig(steps=1, batch_size=2, lr=1e-9, warmup=0, eval_every=1, eval_batches=1, seed=0)
    log = lambda _: None  # noqa: E731
    train(spec, one_step, corpus, tmp_path / "a", progress=False, log=log, init=start)
    z = finetune._free_parameters(tmp_path / "a")["z"]
    assert np.allclose(z, 0.05, atol=1e-6)  # one step of lr 1e-9 from the start
    two = replace(one_step, steps=2)
    train(spec, two, corpus, tmp_path / "b", progress=False, log=log, init=start, stop_at_step=1)
    with pytest.raises(UserError, match="other free parameters"):
        train(spec, two, corpus, tmp_path / "b", resume=True, progress=False, log=log)
    with pytest.raises(UserError, match="other free parameters"):
        train(spec, two, corpus, tmp_path / "b", resume=True, progress=False, log=log, init={"z": start["z"] * 2})
    train(spec, two, corpus, tmp_path / "b", resume=True, progress=False, log=log, init=start)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted run of the smallest study."""
    import torch

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("whole") / "run"
    assert main([*SMALLEST, "--out", str(out)]) == 0
    yield out
    torch.set_num_threads(threads)  # the CLI set its --threads for this process


def test_each_row_is_priced_by_its_own_complete_description(finished):
    summary = json.loads((finished / "study.json").read_text())
    base, tuned = summary["results"]
    assert (base["key"], tuned["key"]) == ("base", "finetuned") and summary["rows"] == 2
    base_bits = json.loads((finished / "quantized" / "base" / "quantized.json").read_text())["message_bits"]
    own_bits = json.loads((finished / "quantized" / "finetuned" / "quantized.json").read_text())["message_bits"]
    delta = verify_delta_model(finished / "delta" / "finetuned")
    assert base["bound"]["message_bits"] == base_bits and delta["base_bits"] == base_bits
    facts = tuned["facts"]
    assert (facts["own_z_bits"], facts["base_bits"], facts["delta_bits"]) == (own_bits, base_bits, delta["delta_bits"])
    assert tuned["bound"]["message_bits"] == 1 + min(own_bits, base_bits + delta["delta_bits"])
    assert facts["coded_as"] == ("own z" if own_bits <= base_bits + delta["delta_bits"] else "base + delta")
    for r in summary["results"]:
        assert r["bound"]["extra_bits"] == 1 == summary["paid_bits"] and r["bound"]["empirical"] < r["bound"]["bound"]
        report = json.loads((finished / "rows" / f"{r['key']}.json").read_text())["report"]
        assert report["config"]["data"] == str(finished / "data")  # both on the plays, not on the dialogue
    assert (finished / "plots" / "base-vs-finetuned.png").read_bytes().startswith(b"\x89PNG")
    assert "| fine-tuned | " in (finished / "study.md").read_text()


def test_the_fine_tuned_model_bounded_is_the_one_decoded(finished):
    """Its bound evaluates its own quantized message's z; and that z started from the base's decoded z."""
    import torch

    from tokenbounds.train.trainer import init_identity

    summary = json.loads((finished / "study.json").read_text())
    tuned = summary["results"][1]
    assert tuned["facts"]["coded_as"] == "own z"  # the smallest size's: the delta branch is tested below
    report = json.loads((finished / "rows" / "finetuned.json").read_text())["report"]
    assert report["config"]["model"] == str(finished / "quantized" / "finetuned")
    state = json.loads((finished / "models" / "finetuned" / "train_state.json").read_text())
    z_base = load_quantized(finished / "quantized" / "base")[0]
    assert state["init"] == init_identity({k: torch.from_numpy(v.copy()) for k, v in z_base.items()})


def test_when_base_plus_delta_is_shorter_its_decoding_is_bounded(finished, monkeypatch):
    real = finetune._quantized

    def longer_own(out, source, name, levels):  # pretend the fine-tuned z alone codes long
        target, manifest = real(out, source, name, levels)
        return target, {
            **manifest,
            "message_bits": manifest["message_bits"] + 10**6,
        } if name == "finetuned" else manifest

    monkeypatch.setattr(finetune, "_quantized", longer_own)
    study = finetune_study(SIZES["smallest"], "smallest")
    built = study.rows[1].build(finished)
    delta = verify_delta_model(finished / "delta" / "finetuned")
    assert built.facts["coded_as"] == "base + delta" and built.request.model == str(finished / "delta" / "finetuned")
    assert built.request.message_bits == 1 + delta["message_bits"]
    report = compute_bound(replace(built.request, samples=16))
    assert report["message_bits"] == 1 + delta["message_bits"]
    assert report["hypothesis"]["format"].startswith("tokenbounds-gpt")  # spec + z_base + delta_hat, as decoded


def test_the_best_row_paid_log2_rows(finished):
    summary = json.loads((finished / "study.json").read_text())
    row = next(r for r in finetune_study(SIZES["smallest"], "smallest").rows if r.key == summary["best"]["key"])
    request = row.build(finished).request  # everything is there: built again without training
    assert request.extra_bits == 0
    paid = compute_bound(replace(request, extra_bits=1.0))
    assert paid["best_bits_per_token"]["bound"] == summary["best"]["bound"]
    assert compute_bound(request)["best_bits_per_token"]["bound"] < summary["best"]["bound"]


def without_seconds(summary: dict) -> dict:
    return {**summary, "results": [{k: v for k, v in r.items() if k != "seconds"} for r in summary["results"]]}


def test_an_interrupted_study_resumes_to_the_uninterrupted_result(finished, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    calls = []
    real_train = building.train

    def interrupted_fine_tuning(spec, cfg, corpus, model_dir, **kw):
        calls.append(model_dir)
        if model_dir.name == "finetuned":
            model_dir.mkdir(parents=True)
            (model_dir / "spec.json").write_text("{")  # as an interrupted first write leaves it
            raise KeyboardInterrupt
        return real_train(spec, cfg, corpus, model_dir, **kw)

    monkeypatch.setattr(building, "train", interrupted_fine_tuning)
    assert main([*SMALLEST, "--out", str(out)]) == 130
    assert [p.stem for p in (out / "rows").iterdir()] == ["base"] and not (out / "study.json").exists()
    monkeypatch.undo()
    bounded = []
    monkeypatch.setattr(
        runner, "compute_bound", lambda request: bounded.append(request.model) or compute_bound(request)
    )
    capsys.readouterr()
    assert main([*SMALLEST, "--out", str(out), "--resume"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("(done before)") and len(bounded) == 1
    resumed = json.loads((out / "study.json").read_text())
    assert without_seconds(resumed) == without_seconds(json.loads((finished / "study.json").read_text()))


def one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(n in err for n in needles), err


def test_another_configuration_is_refused_on_resume(finished, tmp_path, capsys, tiny_gpt2, tiny_corpus):
    before = {p: p.read_bytes() for p in finished.rglob("*.json")}
    one_line_error(capsys, ["study", "finetune", "--out", str(finished), "--resume"], "size: 'smallest' -> 'default'")
    pair = ["--base", str(tiny_gpt2), "--chat", str(tiny_corpus), "--data", str(tiny_corpus)]
    one_line_error(
        capsys, ["study", "finetune", "--out", str(finished), "--resume", *pair], "models: 'embedded' -> 'pair'"
    )
    one_line_error(capsys, [*SMALLEST, "--out", str(finished), "--resume", "--extra-bits", "2"], "extra_bits")
    one_line_error(capsys, [*SMALLEST, "--out", str(finished)], "not empty", "--resume")
    assert {p: p.read_bytes() for p in finished.rglob("*.json")} == before
    one_line_error(capsys, [*SMALLEST, "--out", str(tmp_path / "x"), "--samples", "5"], "--samples", "--base")
    one_line_error(capsys, ["study", "finetune", "--out", str(tmp_path / "x"), "--base", str(tiny_gpt2)], "--data")
    same = ["--base", str(tiny_gpt2), "--chat", str(tiny_gpt2), "--data", str(tiny_corpus)]
    one_line_error(capsys, ["study", "finetune", "--out", str(tmp_path / "x"), *same], "same checkpoint")


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory, tiny_gpt2):
    """tiny_gpt2 with its weights moved a little: a stand-in for its fine-tuned version."""
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(tiny_gpt2)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    directory = tmp_path_factory.mktemp("tiny_chat")
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def test_a_checkpoint_pair_is_priced_by_its_own_files_on_the_same_shards(
    tmp_path, tiny_gpt2, tiny_chat, tiny_corpus, capsys
):
    from tokenbounds.compress.pricing import checkpoint_message_bits

    out = tmp_path / "pair"
    argv = ["study", "finetune", "--out", str(out), "--base", str(tiny_gpt2), "--chat", str(tiny_chat)]
    argv += ["--data", str(tiny_corpus), "--context", "32", "--stride", "16", "--samples", "24", "--no-progress"]
    assert main(argv) == 0
    summary = json.loads((out / "study.json").read_text())
    assert [r["key"] for r in summary["results"]] == ["base", "chat"]
    for r, path in zip(summary["results"], (tiny_gpt2, tiny_chat), strict=True):
        assert r["bound"]["message_bits"] == checkpoint_message_bits(path, progress=False)[0]
        config = json.loads((out / "rows" / f"{r['key']}.json").read_text())["report"]["config"]
        assert config["data"] == str(tiny_corpus) and r["bound"]["extra_bits"] == 1
        assert (config["model"], config["samples"], config["context"]) == (str(path), 24, 32)
    assert "chat" in capsys.readouterr().out
    one_line_error(capsys, [*argv[:-1], "--samples", "25", "--resume"], "samples: 24 -> 25")


def test_help_answers_without_torch():
    code = (
        "import sys\nfrom tokenbounds.cli import build_parser\n"
        "try:\n    build_parser().parse_args(['study', 'finetune', '--help'])\nexcept SystemExit as e:\n"
        "    assert e.code == 0\nassert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert math.isclose(SIZES["smallest"].finetune_lr, SIZES["smallest"].base_lr / 2)  # as the sizes' docstring says
