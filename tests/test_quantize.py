"""Quantization, arithmetic coding and the message: exact round trips, lengths near the entropy, loud failures."""

import argparse
import hashlib
import json
import math

import numpy as np
import pytest

from tokenbounds.compress import message
from tokenbounds.compress.coding import decode_symbols, encode_symbols, entropy_bits
from tokenbounds.compress.model import quantize_model
from tokenbounds.compress.quantize import kmeans_centroids, quantize_tensors, uniform_centroids
from tokenbounds.compress.quantized_dir import MANIFEST, MESSAGE, WEIGHTS, load_quantized
from tokenbounds.errors import UserError


def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = {
        "embed.weight": rng.normal(0, 0.02, (300, 32)).astype(np.float32),
        "ln.weight": (1 + rng.normal(0, 0.1, 32)).astype(np.float32),
        "mlp.weight": rng.standard_t(4, (32, 64)).astype(np.float32),
        "mlp.bias": rng.normal(0, 0.5, 64).astype(np.float32),
        "conv.weight": rng.normal(0, 1, (4, 3, 5)).astype(np.float16),
        "position_ids": np.arange(7, dtype=np.int64),
    }
    t["head.weight"] = t["embed.weight"].copy()
    return t


def _same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a
    )


@pytest.mark.parametrize("kmeans", [False, True])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("levels", [2, 5, 16])
def test_message_round_trip_is_exact(kmeans, shared, levels):
    t = _tensors()
    q = quantize_tensors(t, levels, kmeans=kmeans, shared=shared, ties={"head.weight": "embed.weight"}, config=b"{}")
    coded = message.encode(q)
    d = message.decode(coded)
    assert _same(q.dequantize(), d.dequantize())
    for e, f in zip(q.entries, d.entries, strict=True):
        assert (e.name, e.shape, e.dtype, e.kind, e.group, e.storage, e.target) == (
            f.name,
            f.shape,
            f.dtype,
            f.kind,
            f.group,
            f.storage,
            f.target,
        )
        if e.kind == "quantized":
            assert np.array_equal(e.symbols, f.symbols)
    assert d.config == b"{}"
    deq = d.dequantize()
    # what each tensor became: quantized matrices take <= levels values; 1-D floats are float16-rounded; ints exact
    for name in ("embed.weight", "mlp.weight", "conv.weight"):
        assert len(np.unique(deq[name])) <= levels and deq[name].dtype == np.float32
    assert np.array_equal(deq["ln.weight"], t["ln.weight"].astype(np.float16).astype(np.float32))
    assert np.array_equal(deq["position_ids"], t["position_ids"])
    assert np.array_equal(deq["head.weight"], deq["embed.weight"])
    assert [e.kind for e in d.entries if e.name == "head.weight"] == ["alias"]
    b = message.breakdown(coded)
    parts = b["container_bits"] + b["header_bits"] + b["coded_symbols_bits"] + b["raw_bits"]
    assert parts == b["total_bits"] == 8 * len(coded)
    assert b["raw_bits"] == 8 * (2 * 32 + 2 * 64 + 8 * 7)  # ln + bias as float16, position ids as int64


def test_quantization_is_nearest_codebook_entry():
    x = np.random.default_rng(1).normal(size=(50, 40)).astype(np.float32)
    for kmeans in (False, True):
        q = quantize_tensors({"w": x}, 8, kmeans=kmeans)
        c = q.groups[0].centroids
        assert c.dtype == np.float16 and np.all(np.diff(c.astype(np.float64)) > 0)
        brute = np.abs(x.reshape(-1, 1).astype(np.float64) - c.astype(np.float64)[None]).argmin(axis=1)
        assert np.array_equal(q.entries[0].symbols, brute)
        assert np.array_equal(np.bincount(brute, minlength=len(c)), q.groups[0].counts)
    # uniform: bin centres over [min, max]
    lo, hi = float(x.min()), float(x.max())
    assert np.allclose(uniform_centroids(x, 4), lo + (hi - lo) / 4 * np.array([0.5, 1.5, 2.5, 3.5]))


def test_kmeans_is_a_lloyd_fixed_point_and_beats_uniform():
    x = np.random.default_rng(2).normal(size=20_000)
    c = kmeans_centroids(x, 6)
    idx = np.abs(x[:, None] - c[None]).argmin(axis=1)
    for k in range(6):
        assert c[k] == pytest.approx(x[idx == k].mean(), abs=1e-9)
    mse = {}
    for kmeans in (False, True):
        deq = quantize_tensors({"w": x.reshape(100, 200).astype(np.float32)}, 6, kmeans=kmeans).dequantize()["w"]
        mse[kmeans] = np.mean((deq.reshape(-1) - x) ** 2)
    assert mse[True] < 0.8 * mse[False]


def test_coded_length_is_close_to_the_empirical_entropy():
    rng = np.random.default_rng(3)
    p = np.array([0.6, 0.25, 0.1, 0.04, 0.01])
    streams = [rng.choice(5, size=n, p=p).astype(np.int32) for n in (200_000, 50_000)]
    counts = np.bincount(np.concatenate(streams), minlength=5)
    words = encode_symbols([(s, 0) for s in streams], [counts])
    bits = 32 * len(words)
    nh = entropy_bits(counts)
    assert nh == pytest.approx(-(counts * np.log2(counts / counts.sum())).sum())
    assert nh <= bits <= nh * 1.001 + 64
    back = decode_symbols(words, [(len(s), 0) for s in streams], [counts])
    assert all(np.array_equal(a, b) for a, b in zip(streams, back, strict=True))
    # a symbol that never occurs costs nothing: same length with an extra zero-count codebook entry
    counts0 = np.concatenate([counts, [0]])
    assert len(encode_symbols([(s, 0) for s in streams], [counts0])) == len(words)
    # a constant tensor costs no coded bits
    assert len(encode_symbols([(np.zeros(1000, np.int32), 0)], [np.array([1000, 0])])) == 0


def test_message_bits_track_entropy():
    t = {"w": np.random.default_rng(4).normal(size=(200, 300)).astype(np.float32)}
    for levels in (2, 4, 16):
        q = quantize_tensors(t, levels)
        coded = message.encode(q)
        nh = entropy_bits(q.groups[0].counts)
        b = message.breakdown(coded)
        assert nh <= b["coded_symbols_bits"] <= nh * 1.001 + 100
        assert 8 * len(coded) < nh + 1500  # container, header, codebook and frequency table are small


def test_bad_quantization_input():
    x = {"w": np.random.default_rng(5).normal(size=(10, 10)).astype(np.float32)}
    for levels in (1, 0, -3):
        with pytest.raises(UserError, match="levels must be an integer >= 2"):
            quantize_tensors(x, levels)
    few = {"w": np.repeat(np.array([0.0, 1.0, 2.0], np.float32), 40).reshape(12, 10)}
    with pytest.raises(UserError, match="at least 4 distinct values; got 3"):
        quantize_tensors(few, 4, kmeans=True)
    quantize_tensors(few, 3, kmeans=True)  # exactly enough
    with pytest.raises(UserError, match="NaN"):
        quantize_tensors({"w": np.full((2, 2), np.nan, np.float32)}, 2)
    with pytest.raises(UserError, match="no tensor selected"):
        quantize_tensors(x, 4, select="nothing-matches")
    with pytest.raises(UserError, match="bad --tensors"):
        quantize_tensors(x, 4, select="(")


def _coded() -> bytes:
    return message.encode(quantize_tensors(_tensors(), 4, ties={"head.weight": "embed.weight"}, config=b"{}"))


def test_truncated_or_altered_message_fails_loudly():
    coded = _coded()
    for cut in (1, 7, len(coded) // 2, len(coded) - 40):
        with pytest.raises(UserError, match="checksum|too short"):
            message.decode(coded[:-cut])
    for pos in (5, 40, len(coded) // 3, len(coded) // 2, len(coded) - 1):  # checksum, header, symbols, raw bytes
        bad = bytearray(coded)
        bad[pos] ^= 0x10
        with pytest.raises(UserError):
            message.decode(bytes(bad))
    with pytest.raises(UserError, match="magic"):
        message.decode(b"XXXX" + coded[4:])
    # a body altered *and* re-checksummed is caught by its structure, not decoded into other weights
    body = bytearray(coded[message.PREFIX :])
    body += b"\x00"
    forged = coded[:5] + hashlib.sha256(bytes(body)).digest() + bytes(body)
    with pytest.raises(UserError, match="corrupt message"):
        message.decode(forged)


# ---------------------------------------------------------------------------------------------------- model level


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("gpt2")
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=300, n_positions=64, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(d, safe_serialization=True)
    (d / "tokenizer_config.json").write_text("{}")
    return d


def test_quantize_model_writes_a_loadable_verified_directory(gpt2_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "q4"
    m = quantize_model(gpt2_dir, out, levels=4, kmeans=True, configs_tried=8, progress=False)
    assert (out / MESSAGE).stat().st_size * 8 == m["message_bits"]
    assert m["extra_bits"] == 3.0 and m["levels"] == 4 and m["kmeans"] is True
    assert (out / "tokenizer_config.json").is_file() and (out / "config.json").read_bytes() == (
        gpt2_dir / "config.json"
    ).read_bytes()
    on_disk = json.loads((out / MANIFEST).read_text())
    assert on_disk["message_bits"] == m["message_bits"]
    weights, manifest = load_quantized(out)
    assert manifest == on_disk
    assert _same(weights, message.decode((out / MESSAGE).read_bytes()).dequantize())
    # the default: weight matrices quantized (<= 4 values each), 1-D tensors float16-rounded
    assert all(len(np.unique(weights[n])) <= 4 for n in manifest["quantized_tensors"])
    assert "transformer.wte.weight" in manifest["quantized_tensors"]
    assert all(weights[n].ndim == 1 for n in manifest["raw_tensors"])
    assert np.array_equal(weights["transformer.h.0.ln_1.weight"], np.ones(32, np.float32))
    # tensors equal to an earlier one (here: the all-ones / all-zeros norms and biases of a fresh model) are tied
    assert manifest["tied_tensors"]["transformer.h.0.ln_2.weight"] == "transformer.h.0.ln_1.weight"
    assert m["n_parameters"] == sum(v.size for n, v in weights.items() if n not in manifest["tied_tensors"])
    assert m["bits_per_parameter"] == pytest.approx(m["message_bits"] / m["n_parameters"])
    # DIR is a Hugging Face model directory holding exactly the decoded model, embedding still tied to lm_head
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    sd = model.state_dict()
    for name, v in weights.items():
        assert torch.equal(sd[name], torch.from_numpy(v))
    assert torch.equal(model.lm_head.weight, torch.from_numpy(weights["transformer.wte.weight"]))


def test_levels_and_kmeans_change_the_price(gpt2_dir, tmp_path):
    bits = {}
    for levels in (2, 16):
        m = quantize_model(gpt2_dir, tmp_path / f"u{levels}", levels=levels, progress=False)
        bits[levels] = m["message_bits"]
        assert m["entropy_bits"] <= m["breakdown"]["coded_symbols_bits"] <= m["entropy_bits"] * 1.001 + 64 * 20
        assert m["entropy_bits"] <= m["n_quantized"] * math.log2(levels)
    assert bits[2] < bits[16]
    m = quantize_model(gpt2_dir, tmp_path / "attn", levels=4, tensors=r"attn\.c_attn\.weight", progress=False)
    assert m["quantized_tensors"] == ["transformer.h.0.attn.c_attn.weight", "transformer.h.1.attn.c_attn.weight"]
    load_quantized(tmp_path / "attn")


def test_mismatched_directory_is_refused(gpt2_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    out = tmp_path / "q"
    quantize_model(gpt2_dir, out, levels=4, progress=False)
    good = load_file(str(out / WEIGHTS))
    changed = dict(good)
    w = changed["transformer.h.1.mlp.c_fc.weight"].copy()
    w[0, 0] = np.nextafter(w[0, 0], np.float32(1))  # one ulp: still refused
    changed["transformer.h.1.mlp.c_fc.weight"] = w
    save_file(changed, str(out / WEIGHTS))
    with pytest.raises(UserError, match="differs from the decoded message: refusing"):
        load_quantized(out)
    del changed["transformer.h.1.mlp.c_fc.weight"]
    save_file(changed, str(out / WEIGHTS))
    with pytest.raises(UserError, match="other tensors than the message"):
        load_quantized(out)
    save_file(good, str(out / WEIGHTS))
    load_quantized(out)
    cfg = (out / "config.json").read_text()
    (out / "config.json").write_text(cfg.replace('"n_layer": 2', '"n_layer": 3'))
    with pytest.raises(UserError, match="config"):
        load_quantized(out)
    (out / "config.json").write_text(cfg)
    coded = bytearray((out / MESSAGE).read_bytes())
    coded[-3] ^= 1
    (out / MESSAGE).write_bytes(bytes(coded))
    with pytest.raises(UserError, match="does not match the manifest"):
        load_quantized(out)
    (out / MESSAGE).write_bytes(bytes(coded[:-1]))
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["message_sha256"] = hashlib.sha256(bytes(coded[:-1])).hexdigest()
    manifest["message_bits"] = 8 * (len(coded) - 1)
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="checksum"):
        load_quantized(out)


def test_bad_model_input(gpt2_dir, tmp_path):
    out = tmp_path / "full"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        quantize_model(gpt2_dir, out, levels=4, progress=False)
    with pytest.raises(UserError, match="does not exist"):
        quantize_model(tmp_path / "missing", tmp_path / "o1", levels=4, progress=False)
    empty_dir = tmp_path / "noweights"
    empty_dir.mkdir()
    (empty_dir / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no model weights"):
        quantize_model(empty_dir, tmp_path / "o2", levels=4, progress=False)
    (empty_dir / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="is empty"):
        quantize_model(empty_dir, tmp_path / "o3", levels=4, progress=False)
    with pytest.raises(UserError, match="levels must be"):
        quantize_model(gpt2_dir, tmp_path / "o4", levels=1, progress=False)
    with pytest.raises(UserError, match="needs --data"):
        quantize_model(gpt2_dir, tmp_path / "o5", levels=4, qat_steps=3, progress=False)
    with pytest.raises(UserError, match="not a quantized model directory"):
        load_quantized(gpt2_dir)


def _quantize_cli(argv):
    from tokenbounds.cli import quantize

    parser = argparse.ArgumentParser()
    quantize.add_parser(parser.add_subparsers())
    return quantize.run(parser.parse_args(["quantize"] + argv))


def test_cli_quantize_with_qat(gpt2_dir, tmp_path, capsys):
    # a corpus with structure (a repeated random sequence) so a few steps of centroid fitting lower the loss
    seq = np.random.default_rng(6).integers(1, 300, 40)
    (tmp_path / "train.bin").write_bytes(np.tile(seq, 100).astype("<u2").tobytes())
    out = tmp_path / "qat"
    argv = [str(gpt2_dir), "--levels", "8", "--out", str(out), "--configs-tried", "4", "--no-progress"]
    argv += ["--qat-steps", "25", "--qat-lr", "3e-3", "--qat-length", "32", "--qat-batch", "4"]
    argv += ["--data", str(tmp_path / "train.bin"), "--dtype", "uint16", "--eot", "0"]
    assert _quantize_cli(argv) == 0
    text = capsys.readouterr().out
    assert "bits/parameter" in text and "QAT: 25 steps" in text
    weights, manifest = load_quantized(out)
    q = manifest["qat"]
    assert q["steps"] == 25 and manifest["extra_bits"] == 2.0
    assert q["eval_batch_loss_after_nats"] < q["eval_batch_loss_before_nats"]
    assert all(len(np.unique(weights[n])) <= 8 for n in manifest["quantized_tensors"])
    with pytest.raises(UserError, match="only used with --qat-steps"):
        _quantize_cli([str(gpt2_dir), "--levels", "4", "--out", str(tmp_path / "z"), "--data", "x"])


def test_qat_straight_through_moves_weights_between_centroids(gpt2_dir, tmp_path, capsys):
    seq = np.random.default_rng(6).integers(1, 300, 40)
    (tmp_path / "train.bin").write_bytes(np.tile(seq, 100).astype("<u2").tobytes())
    common = [
        "--levels",
        "8",
        "--no-progress",
        "--qat-steps",
        "20",
        "--qat-lr",
        "3e-3",
        "--qat-length",
        "32",
        "--qat-batch",
        "4",
        "--data",
        str(tmp_path / "train.bin"),
        "--dtype",
        "uint16",
        "--eot",
        "0",
    ]
    assert _quantize_cli([str(gpt2_dir), "--out", str(tmp_path / "fixed"), *common]) == 0
    assert _quantize_cli([str(gpt2_dir), "--out", str(tmp_path / "ste"), "--qat-ste", *common]) == 0
    capsys.readouterr()
    fixed, _ = load_quantized(tmp_path / "fixed")  # the message decodes, verified, to exactly these weights
    ste, manifest = load_quantized(tmp_path / "ste")
    assert manifest["qat"]["ste"] is True and "straight-through" in manifest["qat"]["method"]
    name = manifest["quantized_tensors"][0]
    # Same centroid ranks would mean no weight changed centroid; with STE some must have moved.
    rank_fixed = np.searchsorted(np.unique(fixed[name]), fixed[name])
    rank_ste = np.searchsorted(np.unique(ste[name]), ste[name])
    assert np.any(rank_fixed != rank_ste)
    assert all(len(np.unique(ste[n])) <= 8 for n in manifest["quantized_tensors"])
    assert manifest["qat"]["eval_batch_loss_after_nats"] < manifest["qat"]["eval_batch_loss_before_nats"]


def test_find_ties_shared_storage_and_equal_values():
    from tokenbounds.compress.source import find_ties

    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = {"x": a, "y": a.copy(), "z": a.copy(), "w": np.zeros((2, 3), np.float32), "v": a.astype(np.float16)}
    # z shares storage with y (reported by the loader), y equals x: both end up pointing at x; dtypes must agree
    assert find_ties(t, [("z", "y")]) == {"z": "x", "y": "x"}
    q = quantize_tensors(t, 3, ties=find_ties(t, [("z", "y")]))
    assert [e.kind for e in q.entries] == ["quantized", "alias", "alias", "quantized", "quantized"]
    assert _same(message.decode(message.encode(q)).dequantize(), q.dequantize())


def test_checkpoint_message_bits_for_bound(gpt2_dir, tmp_path):
    from tokenbounds.compress.codecs import checkpoint_size
    from tokenbounds.compress.pricing import checkpoint_message_bits

    bits, info = checkpoint_message_bits(gpt2_dir, progress=False)
    assert bits == checkpoint_size(gpt2_dir, progress=False).codecs["gzip"]
    assert info["codec"] == "gzip" and info["required_extra_bits"] == 0.0 and info["stream"] == "tar"
    bits, info = checkpoint_message_bits(gpt2_dir, progress=False, codecs=("gzip", "xz"))
    assert info["required_extra_bits"] == 1.0 and bits == min(info["codecs_tried"].values())
    out = tmp_path / "q"
    m = quantize_model(gpt2_dir, out, levels=4, configs_tried=4, progress=False)
    bits, info = checkpoint_message_bits(out, progress=False)
    assert bits == m["message_bits"] and info["required_extra_bits"] == 2.0
    json.dumps(info)
    (out / MESSAGE).write_bytes((out / MESSAGE).read_bytes()[:-1])
    with pytest.raises(UserError, match="refusing"):
        checkpoint_message_bits(out, progress=False)
