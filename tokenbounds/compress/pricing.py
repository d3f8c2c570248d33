"""The prior's message length for `bound`, and a JSON-ready record of where it came from. Units: bits.

- a directory from `tokenbounds quantize`: its coded message's length, once `load_quantized` has verified the
  message, config.json and model.safetensors against each other; a Markov chain's: its coded count table's;
- any other model: the compressed size of its priced files (`codecs.checkpoint_size`): by default `gzip -c FILE` /
  `tar -czf`, the paper's recipe.
"""

from collections.abc import Sequence
from pathlib import Path

from tokenbounds.compress.codecs import checkpoint_size
from tokenbounds.compress.count_tables import FORMAT as MARKOV_FORMAT
from tokenbounds.compress.quantized_dir import is_quantized_dir, load_quantized


def quantized_message_bits(model: str | Path, manifest: dict) -> tuple[float, dict]:
    """The prior of a quantized directory whose manifest `load_quantized` has verified: its coded message's bits
    (or of a Markov chain whose count-table message its backend has decoded and verified)."""
    if manifest.get("format") == MARKOV_FORMAT:
        return float(manifest["message_bits"]), {
            "source": "Markov count-table message",
            "message": str(Path(model) / manifest["message"]),
            "message_sha256": manifest["message_sha256"],
            "order": manifest["order"],
            "pseudo_count": manifest["pseudo_count"],
            "n_grams": manifest["n_grams"],
            "bits_per_gram": manifest["bits_per_gram"],
            "required_extra_bits": float(manifest["extra_bits"]),
        }
    return float(manifest["message_bits"]), {
        "source": "quantized message",
        "message": str(Path(model) / manifest["message"]),
        "message_sha256": manifest["message_sha256"],
        "levels": manifest["levels"],
        "kmeans": manifest["kmeans"],
        "n_parameters": manifest["n_parameters"],
        "bits_per_parameter": manifest["bits_per_parameter"],
        "required_extra_bits": float(manifest["extra_bits"]),
    }


def checkpoint_message_bits(
    model: str | Path, progress: bool = True, codecs: Sequence[str] = ("gzip",)
) -> tuple[float, dict]:
    """The prior's message length in bits for `bound --checkpoint-size`, and a JSON-ready record of how it was got.

    - A quantized directory (written by `tokenbounds quantize`): its coded message's length, after `load_quantized`
      has verified the message, config.json and model.safetensors against each other (UserError otherwise).
    - Anything else (HF directory, .gguf file): `checkpoint_size(model, codecs)`, i.e. by default `gzip -c FILE` /
      `tar -czf` over `checkpoint_files(model)`, the paper's recipe.

    The record's "required_extra_bits" must be added to the bound's extra bits: log2(number of codecs) when several
    codecs were tried here, or the quantized directory's manifest extra_bits (configurations tried); 0 for gzip alone.
    """
    if is_quantized_dir(model):
        return quantized_message_bits(model, load_quantized(model)[1])
    r = checkpoint_size(model, codecs=codecs, progress=progress)
    return float(r.best_bits), {
        "source": "checkpoint size",
        "codec": r.best_codec,
        "method": r.methods[r.best_codec],
        "codecs_tried": r.codecs,
        "files": r.files,
        "stream": r.stream,
        "n_parameters": r.n_parameters,
        "bits_per_parameter": r.bits_per_parameter(r.best_codec),
        "required_extra_bits": r.extra_bits,
    }
