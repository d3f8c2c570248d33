"""The units a bound scores, and the context rule that defines the hypothesis.

Context rule ("document"): the prediction for x_i sees the previous <= L tokens, starting at the most
recent end-of-text token (eot), which stays in the context as the beginning-of-document token. Every shard
starts a document, as if a virtual eot stood just before its first token; so the first token of a shard is
predicted from the one-token context [eot], exactly like the first token after a real eot:

    d(i)   = position of the last eot before i in i's shard (the virtual eot at -1 if there is none)
    ctx(i) = x[max(i - L, d(i)) : i]            (x[-1] is the virtual eot)

The rule looks only at x_<i, so the smoothed model under this rule is a predictor in the martingale sense.

A `Unit` is one model input whose outputs score one or more consecutive targets:
`tokens` holds the window, the model reads tokens[:-1], and the targets are tokens[first:], each predicted
from the position just before it. `positions` are the global corpus positions of the targets, so
tokens[first + j] == x[positions[j]] (tests assert this).
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tokenbounds.data.shards import Corpus
from tokenbounds.errors import UserError

EOT_SCAN_CHUNK = 1 << 20  # tokens searched for eots at a time: a few MB however many eots a chunk holds


@dataclass
class Unit:
    tokens: np.ndarray  # int64 window; model input is tokens[:-1]
    first: int  # index in tokens of the first target (>= 1)
    positions: np.ndarray  # int64 global corpus positions of the targets tokens[first:]

    @property
    def n_targets(self) -> int:
        return len(self.tokens) - self.first


def context_rule(context: int) -> str:
    return (
        f"document: the previous <= {context} tokens, starting at the most recent eot (kept as the "
        "beginning-of-document token; each shard starts with a virtual eot)"
    )


def check_context(context: int, max_positions: int | None) -> None:
    """The model must accept L tokens of context (L > 0 is checked with the other flags, before loading)."""
    if max_positions is not None and context > max_positions:
        raise UserError(f"--context {context} exceeds the model's maximum of {max_positions} positions")


def token_unit(corpus: Corpus, position: int, context: int) -> Unit:
    """One target x_position with its own context under the document rule."""
    (shard_index,), (local,) = corpus.locate(np.array([position]))
    shard = corpus.shards[shard_index]
    start = max(local - context, 0)
    window = np.asarray(shard[start : local + 1], dtype=np.int64)
    eots = np.flatnonzero(window[:-1] == corpus.eot)
    if len(eots):  # the most recent eot inside the window starts the context
        window = window[eots[-1] :]
    elif local - context < 0:  # the window reaches the shard start: prepend the virtual eot
        window = np.concatenate([[corpus.eot], window])
    return Unit(tokens=window, first=len(window) - 1, positions=np.array([position], dtype=np.int64))


def sample_positions(corpus: Corpus, samples: int, rng: np.random.Generator) -> np.ndarray:
    """The paper's sampler: s positions uniform over all m tokens (all shards), with replacement."""
    if samples <= 0:
        raise UserError(f"--samples must be > 0, got {samples}")
    return rng.integers(0, corpus.n_tokens, size=samples)


def document_starts(shard: np.ndarray, eot: int, chunk: int | None = None) -> Iterator[np.ndarray]:
    """The positions of a shard's eots that start a document (every eot but a final one), one array per chunk of
    `chunk` tokens (EOT_SCAN_CHUNK by default), so memory stays bounded whatever the shard's length."""
    n = len(shard)
    chunk = chunk or EOT_SCAN_CHUNK
    for start in range(0, n, chunk):
        eots = np.flatnonzero(np.asarray(shard[start : start + chunk]) == eot).astype(np.int64) + start
        yield eots[eots < n - 1]


def document_spans(shard: np.ndarray, eot: int) -> Iterator[tuple[int, int]]:
    """(d, end) for each document of a shard, in order: d its eot (-1: the shard's virtual eot), end its last target.

    Documents start at the virtual eot, then at every real eot that is not the shard's last token; each ends just
    before the next start (the shard's last token for the last one). The eots are found a chunk at a time
    (`document_starts`), not one index per eot of the shard.
    """
    d = -1
    for eots in document_starts(shard, eot):
        for e in eots.tolist():
            yield d, e
            d = e
    yield d, len(shard) - 1


def document_windows(corpus: Corpus, shard_index: int, start: int, end: int, context: int) -> Iterator[Unit]:
    """The model windows scoring the document whose targets are x[start + 1 .. end] of a shard (start = -1: the
    shard's virtual eot): within it the targets start+1 .. start+L share the prefix x[start:], so one forward pass
    over x[start : start+L+1] scores all of them; later targets need their own sliding window x[i-L : i+1]
    (yielded one at a time: a long document's windows hold about L times its tokens)."""
    shard = corpus.shards[shard_index]
    offset = int(corpus.offsets[shard_index])
    head_end = min(start + context, end)
    head = np.asarray(shard[max(start, 0) : head_end + 1], dtype=np.int64)
    if start < 0:
        head = np.concatenate([[corpus.eot], head])
    yield Unit(head, 1, np.arange(start + 1, head_end + 1, dtype=np.int64) + offset)
    for i in range(head_end + 1, end + 1):
        window = np.asarray(shard[i - context : i + 1], dtype=np.int64)
        yield Unit(window, context, np.array([i + offset], dtype=np.int64))


def exhaustive_units(corpus: Corpus, context: int) -> Iterator[Unit]:
    """Every token of the corpus exactly once, under the same document rule: each document's windows
    (`document_windows`), document after document."""
    for shard_index, shard in enumerate(corpus.shards):
        for d, end in document_spans(shard, corpus.eot):
            yield from document_windows(corpus, shard_index, d, end, context)


def block_rule(context: int, stride: int) -> str:
    overlap = context - stride
    if overlap == 0:
        return (
            f"block: the context resets at aligned blocks of {context} tokens per shard; x_i sees an eot "
            "(beginning-of-sequence token) followed by the tokens of its block before it"
        )
    return (
        f"block: aligned blocks of {stride} tokens per shard; x_i sees an eot (beginning-of-sequence token) followed "
        f"by the {overlap} tokens before its block and the tokens of its block before it (context <= {context})"
    )


def check_block(context: int, stride: int, corpus: Corpus | None = None) -> None:
    if stride <= 0 or context % stride:
        raise UserError(f"--stride {stride} must be a positive divisor of the block size (--context {context})")
    if corpus is not None and stride > int(corpus.shard_lengths.max()):
        raise UserError(
            f"block size {stride} is larger than every shard (the longest has {corpus.shard_lengths.max()})"
        )


def block_unit(corpus: Corpus, shard_index: int, block: int, context: int, stride: int) -> Unit:
    """Block `block` of a shard: targets x[b : b + stride], each seeing [eot] + x[b - (context - stride) : i].

    The context is reset at every block (through the eot in front), so one forward pass scores the whole
    block, and with stride < context every target after the shard's first block sees >= context - stride
    tokens. The rule depends on x_<i and on the position i only: a valid predictor.
    """
    shard = corpus.shards[shard_index]
    begin = block * stride
    end = min(begin + stride, len(shard))
    window_start = max(begin - (context - stride), 0)
    tokens = np.concatenate([[corpus.eot], np.asarray(shard[window_start:end], dtype=np.int64)])
    offset = int(corpus.offsets[shard_index])
    return Unit(tokens, 1 + begin - window_start, np.arange(begin, end, dtype=np.int64) + offset)


def exhaustive_block_units(corpus: Corpus, context: int, stride: int) -> Iterator[Unit]:
    """Every block of every shard, in corpus order (a shard's last block may be short)."""
    for shard_index, length in enumerate(corpus.shard_lengths.tolist()):
        for block in range(-(-length // stride)):
            yield block_unit(corpus, shard_index, block, context, stride)


@dataclass(frozen=True)
class ContextRule:
    """The context rule of a hypothesis: what the model sees before each target, and so what one sampled unit is.

    - document (L): x_i sees the previous <= L tokens since the last eot; one sampled unit is one token.
    - block (L, S): aligned blocks of S tokens per shard, each scored after an eot and the L - S tokens before it;
      one sampled unit is one block, drawn with probability proportional to its length.

    Either rule can also score every token once (`exhaustive_units`).
    """

    kind: str  # "document" or "block"
    context: int  # L
    stride: int | None = None  # S (block rule only)

    KINDS = ("document", "block")

    @classmethod
    def document(cls, context: int) -> "ContextRule":
        return cls("document", int(context))

    @classmethod
    def block(cls, context: int, stride: int | None = None) -> "ContextRule":
        return cls("block", int(context), int(context if stride is None else stride))

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise UserError(f"unknown context rule {self.kind!r}; use one of {', '.join(self.KINDS)}")
        if self.context <= 0:
            raise UserError(f"--context must be > 0, got {self.context}")
        if self.kind == "block":
            check_block(self.context, self.stride)
        elif self.stride is not None:
            raise UserError("--stride belongs to the block context rule")

    def describe(self) -> str:
        return context_rule(self.context) if self.kind == "document" else block_rule(self.context, self.stride)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "context": self.context, "stride": self.stride, "text": self.describe()}

    def check(self, corpus: Corpus, max_positions: int | None) -> None:
        """The rule fits the corpus and the model (before anything is scored)."""
        check_context(self.context, max_positions)
        if self.kind == "block":
            check_block(self.context, self.stride, corpus)

    def unit_at(self, corpus: Corpus, position: int) -> Unit:
        """The unit holding target x_position: the token itself (document) or its block (block)."""
        if self.kind == "document":
            return token_unit(corpus, position, self.context)
        (shard,), (local,) = corpus.locate(np.array([position]))
        return block_unit(corpus, int(shard), int(local) // self.stride, self.context, self.stride)

    def draw(self, corpus: Corpus, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(distinct unit keys, sorted; index into them of each of the `samples` draws, in sampling order).

        A uniform position drawn over all m tokens picks a token (document) or the block holding it (block: so a
        block is drawn with probability length / m). A unit's key is its first target's position, and
        `unit_at(corpus, key)` builds it. Memory and time are O(samples), whatever the corpus size.
        """
        positions = sample_positions(corpus, samples, rng)
        if self.kind == "document":
            keys = positions
        else:
            shard, local = corpus.locate(positions)
            keys = corpus.offsets[shard] + (local // self.stride) * self.stride  # the first position of the block
        distinct, draws = np.unique(keys, return_inverse=True)
        return distinct, draws.reshape(-1)

    def sample(self, corpus: Corpus, samples: int, rng: np.random.Generator) -> tuple[list[Unit], np.ndarray]:
        """(distinct units, index into them of each draw, in sampling order): `draw`, with the units built.

        Duplicates are scored once.
        """
        keys, draws = self.draw(corpus, samples, rng)
        return [self.unit_at(corpus, int(k)) for k in keys], draws

    def exhaustive_units(self, corpus: Corpus) -> Iterator[Unit]:
        """Every token of the corpus exactly once, under this rule."""
        if self.kind == "document":
            return exhaustive_units(corpus, self.context)
        return exhaustive_block_units(corpus, self.context, self.stride)
