"""One codec's streaming compressor: a library compressor (zlib, lzma, zstandard, brotli) or a program fed through a
pipe (gzip, xz -T0), in a thread of its own, fed chunks through a bounded queue by `codecs.measure_size`.

Lengths only: the compressed bytes are counted (`_Counter`), never kept unless a test asks for them.
"""

import os
import queue
import shutil
import subprocess
import threading
import time
import zlib

from tokenbounds.compress.archive import CHUNK, clean_env
from tokenbounds.errors import UserError

QUEUE_CHUNKS = 8  # chunks buffered per codec: memory stays below n_codecs x 8 MiB


class _Counter:
    """A write-only sink that counts bytes and optionally keeps them (tests)."""

    def __init__(self, keep: list | None = None):
        self.n = 0
        self.keep = keep

    def write(self, data: bytes) -> None:
        self.n += len(data)
        if self.keep is not None and data:
            self.keep.append(bytes(data))


def _tool_version(tool: str) -> str:
    """'xz 5.4.1' from `xz --version`'s first line: the recipe names the tool that wrote the bytes."""
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, env=clean_env(), timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return tool
    words = out.split()
    return f"{tool} {words[3]}" if len(words) > 3 and tool == "xz" else tool


class _Compressor:
    """One codec at one level: write() chunks, finish() -> compressed bytes. `method` says exactly what ran.

    `size`: the stream's length when known before compressing (one file), told to zstd as the pledged source size,
    as `zstd FILE` does: it goes into the frame header and lets zstd fit its window to the input.
    """

    def __init__(self, name: str, level: int, fname: str | None, out: _Counter, size: int | None = None):
        self.name, self.level, self.out = name, level, out
        # gzip -c FILE stores FILE's base name, NUL-terminated, in the header; a pipe does not.
        self.fname_bytes = len(os.fsencode(fname)) + 1 if fname is not None and name == "gzip" else 0
        self.proc = None
        self.write = self._write_obj
        on_file = " FILE" if fname is not None else ""
        if name == "gzip" and shutil.which("gzip"):
            self._spawn(["gzip", "-c"] + ([] if level == 6 else [f"-{level}"]), on_file)
        elif name == "gzip":
            self.method = f"python zlib level {level}, gzip wrapper" + (" + file name field" if fname else "")
            self.obj = zlib.compressobj(level, zlib.DEFLATED, 31)
        elif name == "xz":
            import lzma

            self.method = f"python lzma preset {level}, CRC64, single thread (= xz -T1 -{level} -c)"
            self.obj = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=level)
        elif name == "xz-mt":
            # Python's lzma has no threads; xz -T0 cuts the input into blocks of 3 x the dictionary size and
            # compresses them in parallel: other bytes than xz -T1, the same whatever the number of threads.
            if not shutil.which("xz"):
                raise UserError(
                    "codec xz-mt runs `xz -T0` and there is no xz program on PATH: install XZ Utils, or use xz "
                    "(Python's lzma, single-threaded)"
                )
            self._spawn(["xz", "-T0", f"-{level}", "-c"], f"{on_file} ({_tool_version('xz')})")
        elif name == "zstd":
            import zstandard

            # Any number of workers >= 1 writes the same bytes (zstd's multi-threaded mode, which the zstd CLI
            # also uses by default, -T1); 0 workers would be the different single-threaded mode.
            lib = ".".join(map(str, zstandard.ZSTD_VERSION))
            self.method = f"zstandard {zstandard.__version__} (libzstd {lib}) level {level}, multi-threaded mode"
            self.method += ", content size in the header" if size is not None else ""
            # The zstd CLI's frame: a checksum, and the content size when the input's length is known.
            self.method += ", checksum"
            cctx = zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True)
            self.obj = cctx.compressobj(size=size) if size is not None else cctx.compressobj()
        elif name == "brotli":
            import brotli

            self.method = f"brotli {getattr(brotli, '__version__', '')} quality {level}, lgwin 24".replace("  ", " ")
            self.obj = brotli.Compressor(quality=level, lgwin=24)
            self.write = self._write_brotli
        else:  # parse_codec has already refused it
            raise AssertionError(name)

    def _spawn(self, cmd: list[str], suffix: str) -> None:
        self.method = " ".join(cmd) + suffix
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env()
        )
        self.write = self.proc.stdin.write
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _drain(self) -> None:
        while data := self.proc.stdout.read1(CHUNK):
            self.out.write(data)

    def _write_obj(self, chunk: bytes) -> None:
        self.out.write(self.obj.compress(chunk))

    def _write_brotli(self, chunk: bytes) -> None:
        self.out.write(self.obj.process(chunk))

    def finish(self) -> int:
        if self.proc is not None:
            self.proc.stdin.close()
            self.drain.join()
            err = self.proc.stderr.read().decode(errors="replace").strip()
            if self.proc.wait() != 0:
                raise RuntimeError(f"{self.method.split()[0]} failed: {err}")
        elif self.name == "brotli":
            self.out.write(self.obj.finish())
        else:
            self.out.write(self.obj.flush())
        return self.out.n + self.fname_bytes

    def abort(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class _Worker(threading.Thread):
    def __init__(self, comp: _Compressor):
        super().__init__(daemon=True)
        self.comp = comp
        self.inbox: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
        self.nbytes: int | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        t0 = time.perf_counter()
        try:
            while (chunk := self.inbox.get()) is not None:
                self.comp.write(chunk)
            self.nbytes = self.comp.finish()
        except BaseException as err:  # reported by the reader thread
            self.error = err
            self.comp.abort()
        self.seconds = time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------------- measure
