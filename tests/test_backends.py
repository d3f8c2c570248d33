"""Every registered backend passes one conformance test (lm-evaluation-harness's idea, here for model paths).

For a tiny local instance of each backend (CASES; a backend registered without one fails here): the registry picks
it, and it alone; the loaded model speaks the `LogitModel` interface and describes itself with the one schema; every
compute dtype it accepts really changes the computation (a backend ignoring --compute-dtype fails), the others are
refused in one line; a checkpoint missing a tensor, or holding one the network does not use, is refused (by `bound`
and by `quantize` alike); and its priced files are what its price covers.
"""

import json
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tokenbounds.compress.files import checkpoint_files
from tokenbounds.compress.model import quantize_model
from tokenbounds.compress.quantized_dir import read_manifest
from tokenbounds.compress.source import Source
from tokenbounds.errors import UserError
from tokenbounds.models.base import COMPUTE_DTYPES, DESCRIPTION_KEYS
from tokenbounds.models.gpt import GPTConfig
from tokenbounds.models.parametrization import (
    FREE_FILE,
    SPEC_FILE,
    build_model,
    free_parameters,
    load_free_parameters,
    make_spec,
    spec_bytes,
)
from tokenbounds.models.registry import Backend, backend_for, backends, open_model, priced_files, register_backend

from .conftest import write_shards
from .test_quip import make_stand_in, quip_copy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DENSE = {"attn": "dense", "mlp": "dense", "embed": "dense", "norm": "dense"}
REFUSED = r"missing|not used|does not use|do not match|unexpected"  # what a partial load is refused with


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


# ------------------------------------------------------------------------------------------------ tiny instances


def write_gguf(path: Path, drop: str | None = None, extra: str | None = None) -> Path:
    """A 2-layer Llama as an F32 GGUF file (what llama.cpp writes, minus the tokenizer), random weights."""
    import gguf

    vocab, width, ffn, layers, heads = 64, 32, 64, 2, 4
    rng = np.random.default_rng(0)

    def w(*shape):
        return rng.normal(0, 0.2, shape).astype(np.float32)

    tensors = {"token_embd.weight": w(vocab, width)}
    for i in range(layers):
        tensors[f"blk.{i}.attn_norm.weight"] = np.ones(width, np.float32)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensors[f"blk.{i}.{name}.weight"] = w(width, width)
        tensors[f"blk.{i}.ffn_norm.weight"] = np.ones(width, np.float32)
        tensors[f"blk.{i}.ffn_gate.weight"] = w(ffn, width)
        tensors[f"blk.{i}.ffn_up.weight"] = w(ffn, width)
        tensors[f"blk.{i}.ffn_down.weight"] = w(width, ffn)
    tensors["output_norm.weight"] = np.ones(width, np.float32)
    tensors["output.weight"] = w(vocab, width)
    if drop:
        del tensors[drop]
    if extra:
        tensors[extra] = w(4, 4)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(width)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_rope_dimension_count(width // heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_trained_gpt(directory: Path, edit=None) -> Path:
    """What `tokenbounds train` leaves: spec.json and free_parameters.safetensors (weights spread, so logits vary)."""
    spec = make_spec(GPTConfig(vocab_size=61, context=16, n_layer=1, n_head=2, n_embd=16), DENSE)
    generator = torch.Generator().manual_seed(0)
    free = {k: torch.randn(p.shape, generator=generator) * 0.3 for k, p in free_parameters(build_model(spec)).items()}
    if edit is not None:
        edit(free)
    directory.mkdir(parents=True)
    (directory / SPEC_FILE).write_bytes(spec_bytes(spec) + b"\n")
    save_file(free, str(directory / FREE_FILE))
    return directory


def write_markov_chain(directory: Path, edit=None) -> Path:
    """What `study markov` leaves for one order: a chain of order 2 counted from a small random corpus."""
    from tokenbounds.data.shards import open_corpus
    from tokenbounds.models.markov import write_markov

    tokens = np.random.default_rng(0).integers(0, 40, size=3000)
    tokens[::50] = 40  # the eot
    corpus = open_corpus(write_shards(directory.with_name(directory.name + "-data"), [tokens], eot=40, vocab=41))
    write_markov(corpus, 2, 1.0, directory, max_memory=2**30)
    if edit is not None:
        edit(directory)
    return directory


def edited_hf_copy(source: Path, target: Path, edit) -> Path:
    shutil.copytree(source, target)
    tensors = load_file(target / "model.safetensors")
    edit(tensors)
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


def quantized_of(source: Path, target: Path, edit=None) -> Path:
    """`quantize` of `source`; `edit` changes the tensors first, so the message itself describes a partial model."""
    src = Source(source)
    if edit is not None:
        edit(src.tensors)
    quantize_model(src, target, levels=16, progress=False)
    return target


@dataclass
class Case:
    backend: str
    path: Path
    priced: list[str]  # names of the files its price covers
    broken: dict = field(default_factory=dict)  # "missing" / "extra" -> a copy with one tensor missing / extra
    options: dict = field(default_factory=dict)


CASE_IDS = ("hf-directory", "hf-gguf", "trained-gpt", "quantized-gpt", "quantized-hf", "quip-sharp", "markov")


@pytest.fixture(scope="module")
def cases(tiny_gpt2, tmp_path_factory) -> dict[str, Case]:
    root = tmp_path_factory.mktemp("backends")
    extra_tensor = {"transformer.h.0.mlp.extra.weight": torch.zeros(4)}
    hf = Case(
        "hf",
        tiny_gpt2,
        ["config.json", "model.safetensors"],
        {
            "missing": edited_hf_copy(tiny_gpt2, root / "hf-m", lambda t: t.pop("transformer.h.0.mlp.c_fc.weight")),
            "extra": edited_hf_copy(tiny_gpt2, root / "hf-x", lambda t: t.update(extra_tensor)),
        },
    )
    gguf = Case(
        "hf",
        write_gguf(root / "tiny.gguf"),
        ["tiny.gguf"],
        {
            "missing": write_gguf(root / "missing.gguf", drop="blk.1.ffn_up.weight"),
            "extra": write_gguf(root / "extra.gguf", extra="blk.0.ffn_extra.weight"),
        },
    )
    gpt = write_trained_gpt(root / "gpt")
    trained = Case(
        "tokenbounds-gpt",
        gpt,
        [SPEC_FILE, FREE_FILE],
        {
            "missing": write_trained_gpt(root / "gpt-m", lambda t: t.pop("blocks.0.mlp.fc.weight")),
            "extra": write_trained_gpt(root / "gpt-x", lambda t: t.update({"extra": torch.zeros(3)})),
        },
    )
    extra_array = {"transformer.h.0.mlp.extra.weight": np.zeros((4, 4), np.float32)}
    quantized_gpt = Case(
        "tokenbounds-quantized",
        quantized_of(gpt, root / "q-gpt"),
        ["message.tbqm"],
        {
            "missing": quantized_of(gpt, root / "q-gpt-m", lambda t: t.pop("blocks.0.mlp.fc.weight")),
            "extra": quantized_of(gpt, root / "q-gpt-x", lambda t: t.update({"extra": np.zeros(3, np.float32)})),
        },
    )
    quantized_hf = Case(
        "tokenbounds-quantized",
        quantized_of(tiny_gpt2, root / "q-hf"),
        ["message.tbqm"],
        {
            "missing": quantized_of(tiny_gpt2, root / "q-hf-m", lambda t: t.pop("transformer.h.0.mlp.c_fc.weight")),
            "extra": quantized_of(tiny_gpt2, root / "q-hf-x", lambda t: t.update(extra_array)),
        },
    )
    checkout, _ = make_stand_in(root / "quip-sharp")
    quip = Case(
        "quip-sharp",
        quip_copy(tiny_gpt2, root / "quip"),
        ["config.json", "model.safetensors"],
        {
            "missing": quip_copy(tiny_gpt2, root / "quip-m", lambda t: t.pop("transformer.h.1.attn.c_proj.weight")),
            "extra": quip_copy(tiny_gpt2, root / "quip-x", lambda t: t.update(extra_tensor)),
        },
        {"quip_sharp": checkout, "quip_python": sys.executable},
    )
    markov = Case(
        "tokenbounds-markov",
        write_markov_chain(root / "markov"),
        ["counts.tbmc"],
        {
            "missing": write_markov_chain(root / "markov-m", lambda d: (d / "counts.tbmc").unlink()),
            "extra": write_markov_chain(root / "markov-x", lambda d: (d / "extra.bin").write_bytes(b"x")),
        },
    )
    built = dict(zip(CASE_IDS, (hf, gguf, trained, quantized_gpt, quantized_hf, quip, markov), strict=True))
    return built


@pytest.fixture(scope="module")
def float32_models(cases):
    """Each case loaded once in float32 (a QuIP# worker is a process: start it once)."""
    return {name: open_model(case.path, "float32", **case.options) for name, case in cases.items()}


def inputs(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(1))
    return ids, torch.tensor([0, 5, 11])


# ------------------------------------------------------------------------------------------------ conformance


def test_every_registered_backend_has_a_case(cases):
    assert {case.backend for case in cases.values()} == set(backends())


@pytest.mark.parametrize("name", CASE_IDS)
def test_the_registry_picks_the_backend_and_it_alone(cases, name):
    case = cases[name]
    assert backend_for(case.path).name == case.backend
    others = [b for b in backends().values() if b.name != case.backend and not b.fallback]
    assert not any(b.can_open(case.path) for b in others)


@pytest.mark.parametrize("name", CASE_IDS)
def test_interface_and_description_schema(cases, float32_models, name):
    model = float32_models[name]
    described = model.describe()
    assert tuple(described) == DESCRIPTION_KEYS
    assert described["source"] == str(cases[name].path)
    assert described["backend"] in backends() and isinstance(described["details"], dict)
    assert described["compute_dtype"] == "float32" and described["vocab_size"] == model.vocab_size
    assert isinstance(described["n_parameters"], int) and described["n_parameters"] > 0
    json.dumps(described)  # the report's hypothesis record
    assert model.max_positions is None or model.max_positions >= 12
    ids, keep = inputs(model.vocab_size)
    logits = model.logits(ids, keep)
    assert logits.dtype == torch.float32 and logits.shape == (2, 3, model.vocab_size)
    assert torch.isfinite(logits).all() and logits.std() > 0


@pytest.mark.parametrize("name", CASE_IDS)
def test_logits_written_into_out_are_the_same_bits(cases, float32_models, name):
    """`out` (base.py) changes where the logits land, never their bits; Hugging Face models do write into it."""
    model = float32_models[name]
    ids, keep = inputs(model.vocab_size)
    fresh = model.logits(ids, keep).clone()
    out = torch.full((2, 3, model.vocab_size), math.nan)
    got = model.logits(ids, keep, out=out)
    assert torch.equal(got, fresh)
    assert model.fills_out == (name in ("hf-directory", "hf-gguf", "quantized-hf"))  # transformers networks do
    if model.fills_out:
        assert got.data_ptr() == out.data_ptr() and torch.equal(out, fresh)


def test_a_model_that_transforms_its_head_output_keeps_its_transform(tmp_path):
    """Gemma 2 caps its logits after the head: writing the head into `out` must not lose the cap."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=64,
        final_logit_softcapping=0.5,  # every logit in (-0.5, 0.5)
    )
    Gemma2ForCausalLM(config).save_pretrained(tmp_path / "gemma2", safe_serialization=True)
    model = open_model(tmp_path / "gemma2", "float32")
    ids, keep = inputs(model.vocab_size)
    fresh = model.logits(ids, keep).clone()
    got = model.logits(ids, keep, out=torch.empty(2, 3, model.vocab_size))
    assert torch.equal(got, fresh) and got.abs().max() < 0.5


@pytest.mark.parametrize("name", CASE_IDS)
def test_every_accepted_compute_dtype_is_applied(cases, float32_models, name):
    case = cases[name]
    accepted = [d for d in backend_for(case.path).compute_dtypes if d != "float32"]
    if not accepted:
        pytest.skip(f"{case.backend} accepts float32 only (the others are refused: see below)")
    ids, keep = inputs(float32_models[name].vocab_size)
    reference = float32_models[name].logits(ids, keep)
    for dtype in accepted:
        model = open_model(case.path, dtype, **case.options)
        assert model.describe()["compute_dtype"] == dtype
        logits = model.logits(ids, keep)
        assert logits.dtype == torch.float32  # the log-softmax stays float32
        assert not torch.equal(logits, reference), f"{case.backend} ignored --compute-dtype {dtype}"
        assert (logits - reference).abs().mean() < 0.05 * reference.abs().mean() + 0.05


@pytest.mark.parametrize("name", CASE_IDS)
def test_refused_compute_dtypes_are_one_line(cases, name):
    case = cases[name]
    for dtype in set(COMPUTE_DTYPES) - set(backend_for(case.path).compute_dtypes):
        with pytest.raises(UserError) as err:
            open_model(case.path, dtype, **case.options)
        assert dtype in one_line(err)
    with pytest.raises(UserError) as err:
        open_model(case.path, "float16", **case.options)
    assert "unknown compute dtype" in one_line(err)


@pytest.mark.parametrize("kind", ["missing", "extra"])
@pytest.mark.parametrize("name", CASE_IDS)
def test_partial_load_is_refused(cases, name, kind):
    case = cases[name]
    with pytest.raises(UserError, match=REFUSED) as err:
        open_model(case.broken[kind], "float32", **case.options)
    one_line(err)


@pytest.mark.parametrize("kind", ["missing", "extra"])
@pytest.mark.parametrize("name", ["hf-directory", "hf-gguf", "trained-gpt"])
def test_quantize_refuses_what_bound_refuses(cases, name, kind, tmp_path):
    with pytest.raises(UserError, match=REFUSED) as err:
        quantize_model(cases[name].broken[kind], tmp_path / "q", levels=4, progress=False)
    one_line(err)
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("name", CASE_IDS)
def test_priced_files_are_what_the_price_covers(cases, name):
    case = cases[name]
    files = priced_files(case.path)
    assert [f.name for f in files] == case.priced
    assert all(f.is_file() and f.stat().st_size > 0 for f in files)
    assert checkpoint_files(case.path) == files  # what `size` and `bound --checkpoint-size` compress
    if case.backend == "tokenbounds-quantized":  # the prior is the message: 8 bits per byte of these files
        assert 8 * sum(f.stat().st_size for f in files) == read_manifest(case.path)["message_bits"]
    if case.backend == "tokenbounds-markov":  # the prior is the coded count table
        assert 8 * files[0].stat().st_size == json.loads((case.path / "markov.json").read_text())["message_bits"]


# ------------------------------------------------------------------------------------------------ one meaning


@pytest.mark.parametrize("name", ["hf-directory", "trained-gpt"])
def test_bfloat16_means_weights_cast_and_computed_in_bfloat16(cases, name):
    """One meaning for trained GPTs and Hugging Face models: the float32 network cast to bfloat16 (not autocast)."""
    from transformers import AutoModelForCausalLM

    path = cases[name].path
    if name == "trained-gpt":
        network = build_model(json.loads((path / SPEC_FILE).read_text()))
        load_free_parameters(network, load_file(path / FREE_FILE))
        forward = lambda ids, keep: network(ids, keep=keep)  # noqa: E731
    else:
        network = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        forward = lambda ids, keep: network(input_ids=ids, logits_to_keep=keep).logits  # noqa: E731
    network = network.eval().to(torch.bfloat16)
    model = open_model(path, "bfloat16")
    ids, keep = inputs(model.vocab_size)
    with torch.inference_mode():
        torch.testing.assert_close(model.logits(ids, keep), forward(ids, keep).float(), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ the registry


def test_registration_checks_the_interface():
    class NoPricing(Backend):
        label = "incomplete"

        def can_open(self, path):
            return False

        def load(self, path, compute_dtype, device):
            raise AssertionError

    with pytest.raises(TypeError, match="does not implement"):
        register_backend("incomplete")(NoPricing)
    with pytest.raises(TypeError, match="not a Backend subclass"):
        register_backend("plain")(type("Plain", (), {}))
    with pytest.raises(TypeError, match="registered twice"):
        register_backend("hf")(type(backends()["hf"]))

    class Float32Only(NoPricing):
        compute_dtypes = ("float32",)

        def priced_files(self, path):
            return []

    with pytest.raises(TypeError, match="dtype_refusal"):
        register_backend("float32-only")(Float32Only)
    assert {"incomplete", "plain", "float32-only"}.isdisjoint(backends())


def test_ambiguous_unknown_and_missing_paths_are_one_line(cases, tmp_path):
    both = tmp_path / "both"
    shutil.copytree(cases["quantized-gpt"].path, both)
    shutil.copy(cases["trained-gpt"].path / SPEC_FILE, both / SPEC_FILE)
    with pytest.raises(UserError, match="ambiguous") as err:
        open_model(both)
    one_line(err)
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(UserError, match="not a model this tool can open") as err:
        open_model(text)
    one_line(err)
    with pytest.raises(UserError, match="does not exist"):
        priced_files(tmp_path / "nowhere")


def test_an_option_of_another_backend_is_refused(cases):
    with pytest.raises(UserError, match="--quip-sharp is for a QuIP# checkpoint .* is not one") as err:
        open_model(cases["trained-gpt"].path, quip_sharp=cases["quip-sharp"].options["quip_sharp"])
    one_line(err)
