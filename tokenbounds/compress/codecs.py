"""Message length of checkpoint files under general-purpose codecs (docs/compression.md, "1. Checkpoint files").
Units: bits = 8 x compressed bytes.

What is compressed (the *stream*):

- one file: the file's bytes. gzip's length is that of `gzip -c FILE`, the paper's recipe: GNU gzip's 10-byte
  header, the file's base name (FNAME field, len(name) + 1 bytes), the deflate stream and the 8-byte trailer. We
  feed gzip the bytes through a pipe (so we can show progress) and add the len(name) + 1 bytes of the name field
  that `gzip -c FILE` writes and `gzip -c < FILE` does not; the deflate stream is identical (tested).
- several files: the GNU tar archive `tar -cf - -C DIR1 NAME1 -C DIR2 NAME2 ...` (each member under its base name,
  in the order given), compressed by each codec. gzip's length is then exactly that of `tar -czf OUT.tar.gz ...`
  (GNU tar pipes the same archive through gzip; tested).

Codecs and levels (a spec is NAME or NAME:LEVEL, e.g. `brotli:11`):

- gzip: the system `gzip` (GNU gzip, default level 6) when it is on PATH: exactly the paper's recipe. Without it,
  Python's zlib at level 6 in a gzip wrapper plus the same name field; zlib's deflate is a different
  implementation from GNU gzip's and its output is not byte-identical: on the SmolLM2-135M Q4_1 GGUF it is 0.2 %
  longer (92,863,459 vs 92,678,226 bytes), so `SizeResult.methods` says which one ran. A level is passed as
  `gzip -LEVEL`.
- xz: Python's lzma (liblzma), preset 6 (xz's default), CRC64 check, single-threaded: the same bytes as
  `xz -T1 -6 -c`.
- xz-mt: the system `xz -T0 -6 -c` (XZ Utils >= 5.4), fed through a pipe: the input is cut into blocks of 3 x the
  dictionary size (24 MiB at -6) compressed in parallel, so its bytes differ from xz's (a prior of its own) but not
  with the number of cores: the same bytes as `xz -T0 -6 -c FILE` anywhere. Refused when there is no xz program.
- zstd: the `zstandard` package, level 19 (the strongest level without --ultra memory), zstd's multi-threaded mode
  on all cores, with a checksum and (one file) the content size in the frame header: the settings of
  `zstd -19 -c FILE`, whose default -T1 is the same mode. That mode's bytes do not depend on the number of threads
  (zstd -19 = zstd -T0 -19), so there is no separate zstd-mt codec. They equal the CLI's where the CLI's libzstd is
  the version zstandard bundles (1.5.7 for zstandard 0.25); the recipe names it.
- brotli: the `brotli` package, quality 9 with a 2^24-byte window. Quality 11 compresses at 0.6 MB/s on an 8 MB
  slice of the SmolLM2 GGUF on an idle core here (a 100 MB checkpoint: 3 minutes or more; a 10 GB one: 5 hours) for
  0.25 % fewer bytes on that slice; quality 9 runs at about 50 MB/s. Ask for `brotli:11` when it is worth it.

All codecs run at once, each in its own thread (zlib, lzma, zstd and brotli release the GIL while compressing; gzip
and xz-mt are separate processes), fed from one reader through bounded queues: the checkpoint is read once,
streamed in 1 MiB chunks, never held in memory. A progress bar counts the bytes read. Each codec alone runs at the
speed of its own command-line tool at the same settings (scripts/bench_codecs.py measures both on the same file).

Every priced file is stat()ed (device, inode, size, modification time) before the first read and after the last; a
file that changed meanwhile (or read as a different length) is refused: the length would be of no fixed checkpoint.

Choosing the shortest of K codec configurations after seeing the sizes costs extra_bits = log2 K (docs/compression.md,
"The prior: what a message costs").

Which files are compressed: `compress.files` (each backend lists its model's priced files).
"""

import math
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokenbounds.architecture import dense_parameter_count, packed_format
from tokenbounds.compress.archive import changed_files, file_chunks, identities, tar_chunks
from tokenbounds.compress.codec_table import DEFAULT_CODECS, codec_label, parse_codec
from tokenbounds.compress.compressor import _Compressor, _Counter, _Worker
from tokenbounds.compress.files import resolve_files
from tokenbounds.compress.param_count import count_parameters
from tokenbounds.errors import UserError


@dataclass
class SizeResult:
    """Message lengths of one checkpoint under several codecs. Every length is in bits (8 x bytes)."""

    files: list[str]  # what was priced, in the order it was compressed
    stream: str  # "file" (one file's bytes) or "tar" (GNU tar archive of the files)
    stream_bytes: int  # uncompressed length of the stream, bytes
    codecs: dict[str, int]  # codec spec -> bits
    methods: dict[str, str]  # codec spec -> the exact recipe that ran
    seconds: dict[str, float]  # codec spec -> wall-clock seconds
    n_parameters: int | None  # weights: tensor headers, or the architecture for packed formats; None if unknown
    n_stored_values: int | None = None  # packed formats: scalars in the tensor headers (packed integers count once)
    packed_format: str | None = None  # "QuIP#", "gptq", ... when the config names one
    extra_bits: float = field(init=False)  # log2(number of codecs tried)
    best_codec: str = field(init=False)
    best_bits: int = field(init=False)

    def __post_init__(self):
        self.best_codec = min(self.codecs, key=lambda c: (self.codecs[c], c))
        self.best_bits = self.codecs[self.best_codec]
        self.extra_bits = math.log2(len(self.codecs))

    def bits_per_parameter(self, codec: str) -> float | None:
        return self.codecs[codec] / self.n_parameters if self.n_parameters else None

    def to_json(self) -> dict:
        return {
            "unit": "bits",
            "files": self.files,
            "stream": self.stream,
            "stream_bytes": self.stream_bytes,
            "codecs": self.codecs,
            "methods": self.methods,
            "seconds": self.seconds,
            "best_codec": self.best_codec,
            "best_bits": self.best_bits,
            "extra_bits": self.extra_bits,
            "n_parameters": self.n_parameters,
            "n_stored_values": self.n_stored_values,
            "packed_format": self.packed_format,
            "bits_per_parameter": {c: self.bits_per_parameter(c) for c in self.codecs},
        }


# ---------------------------------------------------------------------------------------------------------- codecs


def measure_size(
    paths: Sequence[str | Path],
    codecs: Sequence[str] = DEFAULT_CODECS,
    progress: bool = True,
    _keep: dict | None = None,
) -> SizeResult:
    """Message length in bits of the checkpoint at `paths` under each codec, all codecs running at once.

    `paths`: files and/or model directories (expanded with `checkpoint_files`). One file -> its bytes are compressed
    (gzip = `gzip -c FILE`); several -> their GNU tar archive (gzip = `tar -czf`). `codecs`: specs NAME[:LEVEL]
    from gzip, xz, zstd, brotli; duplicates are tried once. Returns a SizeResult (bits per codec, best codec,
    extra_bits = log2(number of codecs), n_parameters). UserError on bad paths or codec specs.
    """
    files = resolve_files(paths)
    parsed: dict[str, tuple[str, int]] = {}
    for spec in codecs:
        name, level = parse_codec(spec)
        parsed.setdefault(codec_label(name, level), (name, level))
    if not parsed:
        raise UserError("no codec given")
    config = next((f for f in files if f.name == "config.json"), None)
    packed = packed_format(config.parent) if config is not None else None
    # Reading a GGUF's header (its tokenizer's metadata included) takes seconds, as long as gzip over the whole file:
    # count in a thread while the codecs run; a bad header stops the reader at the next chunk.
    counted: dict = {}
    counter = threading.Thread(target=_count_into, args=(files, counted), daemon=True)
    counter.start()

    # Stat before the first read and after the last: a checkpoint rewritten meanwhile would be priced as bytes
    # that no one has.
    before = identities(files)
    total = sum(ident[2] for ident in before)
    if len(files) == 1:
        stream, fname = "file", files[0].name
        chunks: Iterator[bytes] = file_chunks(files[0])
        stream_method = "file bytes"
    else:
        stream, fname = "tar", None
        chunks, stream_method = tar_chunks(files)

    workers = {}
    try:
        for label, (name, level) in parsed.items():
            keep = _keep.setdefault(label, []) if _keep is not None else None
            comp = _Compressor(name, level, fname, _Counter(keep), size=total if stream == "file" else None)
            workers[label] = _Worker(comp)
    except BaseException:
        for w in workers.values():
            w.comp.abort()
        raise
    for w in workers.values():
        w.start()

    from tqdm import tqdm

    streamed = 0
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"compressing ({', '.join(parsed)})",
        disable=not progress,
        leave=False,
    ) as bar:
        try:
            for chunk in chunks:
                if "error" in counted:
                    raise counted["error"]
                for w in workers.values():
                    _put(w, chunk)
                streamed += len(chunk)
                bar.update(len(chunk))
        except UserError:  # GNU tar's "file changed as we read it": say which file, as below
            _refuse_if_changed(files, before, None, total)
            raise
        finally:
            for w in workers.values():
                if w.is_alive():
                    _put(w, None, give_up_on_error=False)
            for w in workers.values():
                w.join()
    counter.join()
    if "error" in counted:
        raise counted["error"]
    n_params = n_stored = counted["n"]
    if packed is not None:  # bits per parameter should mean per weight described, not per packed integer
        n_params = dense_parameter_count(config.parent)
    _refuse_if_changed(files, before, streamed if stream == "file" else None, total)
    for label, w in workers.items():
        if w.error is not None:
            raise RuntimeError(f"codec {label} failed: {w.error}") from w.error
    methods = {label: w.comp.method for label, w in workers.items()}
    if stream == "tar":
        methods = {label: f"{m}, over {stream_method}" for label, m in methods.items()}
        if methods.get("gzip") == "gzip -c, over the GNU tar archive":
            methods["gzip"] = "tar -czf (the GNU tar archive piped through gzip -c)"
    return SizeResult(
        files=[str(f) for f in files],
        stream=stream,
        stream_bytes=streamed,
        codecs={label: 8 * w.nbytes for label, w in workers.items()},
        methods=methods,
        seconds={label: round(w.seconds, 3) for label, w in workers.items()},
        n_parameters=n_params,
        n_stored_values=n_stored if packed is not None else None,
        packed_format=packed,
    )


def _count_into(files: list[Path], counted: dict) -> None:
    try:
        counted["n"] = count_parameters(files)
    except BaseException as err:  # re-raised by measure_size's thread
        counted["error"] = err


def _refuse_if_changed(files: list[Path], before: list, streamed: int | None, total: int) -> None:
    changed = changed_files(files, before)
    if not changed and streamed is not None and streamed != total:  # grew or shrank between stat() and read()
        changed = [files[0]]
    if changed:
        raise UserError(
            f"{', '.join(map(str, changed))} changed while it was being priced (size, modification time or inode "
            "differ from before reading): its message length would be that of no fixed checkpoint; price it when "
            "nothing writes to it"
        )


def _put(worker: _Worker, item, give_up_on_error: bool = True) -> None:
    """Blocking put that notices a dead worker instead of waiting forever."""
    while True:
        if worker.error is not None:
            if give_up_on_error:
                raise RuntimeError(f"codec {worker.comp.name} failed: {worker.error}") from worker.error
            return
        if not worker.is_alive() and worker.nbytes is not None:
            return
        try:
            worker.inbox.put(item, timeout=0.2)
            return
        except queue.Full:
            continue


def checkpoint_size(model: str | Path, codecs: Sequence[str] = ("gzip",), progress: bool = True) -> SizeResult:
    """For `bound --checkpoint-size`: the message length of the model at `model` (HF directory or .gguf file).

    Prices `checkpoint_files(model)` with `codecs` (default: gzip alone, the paper's recipe, extra_bits = 0).
    Use `result.best_bits` as the message bits and add `result.extra_bits`; name `result.best_codec` in the report.
    """
    return measure_size([model], codecs=codecs, progress=progress)
