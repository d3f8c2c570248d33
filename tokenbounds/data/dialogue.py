"""Dialogue turns of the embedded plays, rendered in a chat template: the fine-tuning corpus of `study finetune`.

In the embedded Gutenberg editions a speech is a paragraph whose first line names its speaker and whose other lines
are what is said:

    HAMLET.                 KING OF FRANCE.          Ham.            HELENA
    To be, or not to be,    ...                      ...             Stay, though thou kill me, sweet Demetrius.

A heading is either capitals (with spaces, apostrophes, hyphens, an optional final period) or up to three
capitalised words ending in a period ("Ham.", "First Serv.", "Lady M."), at most 40 characters. Stage directions
within a speech ("[Aside.]") are cut out, and a line opening one that runs on is dropped; a paragraph of anything
else (stage directions, verse of the poems, titles) is not a turn. An act or scene heading ends a dialogue, and a
dialogue holds at most `max_turns` consecutive turns. The sonnets and poems have no speakers and give no dialogue.

Each dialogue is rendered as alternating user / assistant messages in ChatML (the speakers' names dropped: the
roles replace them), one document of the fine-tuning corpus:

    <|im_start|>user
    {first speech}<|im_end|>
    <|im_start|>assistant
    {second speech}<|im_end|>
    ...

This corpus is only what the base model is fine-tuned on: the study bounds both models on the plays as they are.
"""

import json
import lzma
import re
from pathlib import Path

ROLES = ("user", "assistant")
CAPITALS = re.compile(r"[A-Z][A-Z0-9 ,'&-]*[A-Z]\.?")
ABBREVIATED = re.compile(r"[A-Z][a-z]*\.?( [A-Z][a-z]*\.?){0,2}\.")
STAGE_DIRECTION = re.compile(r"\[[^\]]*\]")  # "[Aside.]" within a line of speech
DIALOGUE_BREAK = re.compile(r"(ACT|SCENE) [IVXLC]+\b")
MAX_HEADING = 40


def is_speaker(line: str) -> bool:
    """Whether a paragraph's first line (stripped) names a speaker."""
    if not line or len(line) > MAX_HEADING or DIALOGUE_BREAK.match(line):
        return False
    return bool(CAPITALS.fullmatch(line) or ABBREVIATED.fullmatch(line))


def speech(paragraph: str) -> str | None:
    """The words of a speaker's paragraph (its heading and stage directions dropped), or None if not a turn."""
    lines = [line.strip() for line in paragraph.strip("\n").split("\n")]
    if len(lines) < 2 or not is_speaker(lines[0]):
        return None
    said = [STAGE_DIRECTION.sub("", line).strip() for line in lines[1:] if not line.startswith("[") or "]" in line]
    return "\n".join(line for line in said if line) or None


def dialogues(text: str, max_turns: int) -> list[list[str]]:
    """The work's dialogues, in order: runs of at most `max_turns` consecutive speeches, cut at acts and scenes."""
    if max_turns < 2:
        raise ValueError(f"a dialogue needs at least 2 turns, got max_turns={max_turns}")
    found, current = [], []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        first = paragraph.strip()
        if DIALOGUE_BREAK.match(first):
            found.append(current)
            current = []
            continue
        said = speech(paragraph)
        if said is None:
            continue
        current.append(said)
        if len(current) == max_turns:
            found.append(current)
            current = []
    found.append(current)
    return [turns for turns in found if len(turns) >= 2]


def render_chat(turns: list[str]) -> str:
    """One dialogue in ChatML, the roles alternating from user."""
    return "".join(f"<|im_start|>{ROLES[i % 2]}\n{said}<|im_end|>\n" for i, said in enumerate(turns))


def write_dialogue_corpus(works: Path, out: Path, max_turns: int) -> dict:
    """The dialogues of every work in `works` (a .jsonl.xz of {"title", "text"}) as a jsonl of {"text": chat} at
    `out`; returns counts for the record."""
    counts = {"works": 0, "works_with_dialogue": 0, "dialogues": 0, "turns": 0, "max_turns": max_turns}
    with lzma.open(works, "rt", encoding="utf-8") as source, out.open("w", encoding="utf-8") as sink:
        for line in source:
            found = dialogues(json.loads(line)["text"], max_turns)
            counts["works"] += 1
            counts["works_with_dialogue"] += bool(found)
            for turns in found:
                sink.write(json.dumps({"text": render_chat(turns)}) + "\n")
                counts["dialogues"] += 1
                counts["turns"] += len(turns)
    return counts
