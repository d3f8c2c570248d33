"""The byte stream a size measurement compresses: one file's bytes, or the GNU tar archive of several files.

The archive is `tar -cf - -C DIR1 NAME1 -C DIR2 NAME2 ...` (each member under its base name, in the order given)
when GNU tar is on PATH, so gzip over it is exactly `tar -czf`; else Python's tarfile in GNU format. Both are
streamed in 1 MiB chunks, never held in memory.
"""

import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from tokenbounds.errors import UserError

CHUNK = 1 << 20  # bytes per read
# Environment variables that would silently change what gzip / tar / xz write.
SCRUB_ENV = ("GZIP", "TAR_OPTIONS", "XZ_OPT", "XZ_DEFAULTS", "ZSTD_CLEVEL", "ZSTD_NBTHREADS")


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in SCRUB_ENV}


def identities(files: Sequence[Path]) -> list[tuple[int, int, int, int]]:
    """(device, inode, size, mtime in ns) of each file: what a rewrite, an append or a replacement changes."""
    out = []
    for f in files:
        st = os.stat(f)
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return out


def changed_files(files: Sequence[Path], before: Sequence[tuple[int, int, int, int]]) -> list[Path]:
    """The files whose identity differs from `before` (or that are gone)."""
    changed = []
    for f, old in zip(files, before, strict=True):
        try:
            now = identities([f])[0]
        except OSError:
            now = None
        if now != old:
            changed.append(f)
    return changed


def file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def tar_chunks(files: Sequence[Path]) -> tuple[Iterator[bytes], str]:
    """The uncompressed GNU tar archive of `files` (members under their base names), streamed."""
    if shutil.which("tar"):
        cmd = ["tar", "-cf", "-"]
        for f in files:
            cmd += ["-C", str(f.parent.resolve()), f.name]

        def gen() -> Iterator[bytes]:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
            try:
                while chunk := proc.stdout.read(CHUNK):
                    yield chunk
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            err = proc.stderr.read().decode(errors="replace").strip()
            if proc.wait() != 0:
                raise UserError(f"tar failed: {err}")

        return gen(), "the GNU tar archive"

    def gen_py() -> Iterator[bytes]:
        r, w = os.pipe()
        failure: list[BaseException] = []

        def writer():
            try:
                with os.fdopen(w, "wb") as fh, tarfile.open(fileobj=fh, mode="w|", format=tarfile.GNU_FORMAT) as tar:
                    for f in files:
                        tar.add(str(f), arcname=f.name, recursive=False)
            except BaseException as err:
                failure.append(err)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        with os.fdopen(r, "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk
        t.join()
        if failure:
            raise UserError(f"could not build the tar archive: {failure[0]}")

    return gen_py(), "a GNU-format tar archive (python tarfile)"
