"""Whole documents and aligned sequences as the units of an IID bound (`bound --unit document|sequence`).

The predecessor paper (Lotfi et al., "Non-Vacuous Generalization Bounds for Large Language Models", ICML 2024)
treats the training set as n i.i.d. draws D_1..D_n of a unit D (a document, or a sequence of L tokens) and bounds

    R_unit = E_D[ f_h(D) ],    f_h(D) = (1/|D|) sum_{i in D} l_h(x_i | context(i))

the expected mean loss of one unit: every unit weighs the same, whatever its length (the token-level bound's R
weighs every token the same instead). Here

- a **document** is what the document context rule calls one: the targets after an eot (or a shard's start, its
  virtual eot) up to and including the next eot (or the shard's last token). So a document's eot is its last target,
  and a document cut by a shard boundary is two documents. Under the document rule (x_i sees the previous <= L
  tokens since the last eot) no context reaches before the document's own start, so f_h(D) is a function of D
  alone; a document longer than L is scored in sliding windows: its first window scores its first L targets, every
  later target x_i has its own window x[i - L : i + 1] (`document_windows`), each target scored exactly once.
- a **sequence** is an aligned block of L tokens of a shard (a shard's last one may be shorter), scored under the
  block rule with S = L: its context resets at the block's start (an eot in front), so f_h(S) is a function of S
  alone. Treating consecutive sequences as independent is the predecessor's assumption, not a fact: sequences cut
  from one document are dependent in general, and the report says so.

Why the bound is lotfi's formula with m = n (tokenbounds.stats.bound.statistic_bound, method "lotfi"): every token
loss lies in [a, a + Delta], so each unit mean f_h(D_j) does too, and for a fixed h the n values are i.i.d.; Hoeffding's
inequality gives P(R_unit - (1/n) sum_j f_h(D_j) >= t) <= exp(-2 n t^2 / Delta^2). Giving hypothesis h the failure
probability P(h) delta1 (sum over h <= delta1) and solving for t:

    R_unit <= R_hat_unit + Delta sqrt((log 1/P(h) + ln 1/delta1) / (2 n))    for all h at once, w.p. >= 1 - delta1,

which is `martingale_term(Delta, C, n, delta1)`. R_hat_unit = (1/n) sum_j f_h(D_j) is exact when every unit is
scored; otherwise s units are drawn uniformly with replacement over the n units (fresh randomness after h is fixed),
so each draw's value has expectation R_hat_unit and lies in [a, a + Delta]: any of the subsampling UCBs applies at
delta2. The eb method is not offered: its centring c_i is a per-token function of the past and its proof a
martingale over tokens, which bounds the token-level R, not R_unit.

Finding the n documents takes one scan of every shard for eots, a chunk at a time (`units.document_starts`: never a
whole shard in memory), keeping one int64 per document.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from tokenbounds.data.shards import Corpus
from tokenbounds.data.units import Unit, block_unit, document_starts, document_windows

UNITS = ("token", "document", "sequence")


def document_ends(shard: np.ndarray, eot: int, chunk: int | None = None) -> np.ndarray:
    """Local position of each document's last target in one shard: every eot but a final one, then the last token."""
    found = list(document_starts(shard, eot, chunk))
    return np.concatenate([np.zeros(0, dtype=np.int64), *found, [len(shard) - 1]]).astype(np.int64)


@dataclass
class WholeUnits:
    """The n units of an IID bound (documents or sequences) of one corpus under one context length L.

    Unit j is located by `ends` (documents: each one's last target, global, with its shard) or by arithmetic
    (sequences: the j-th aligned block of L tokens, counting shard by shard).
    """

    kind: str  # "document" or "sequence"
    corpus: Corpus
    context: int
    first_unit: np.ndarray  # (shards + 1,): index of each shard's first unit; the last entry is n
    ends: list[np.ndarray] | None  # documents: per shard, each document's last target (local)

    @property
    def n(self) -> int:
        return int(self.first_unit[-1])

    def _where(self, j: int) -> tuple[int, int]:
        shard = int(np.searchsorted(self.first_unit, j, side="right")) - 1
        return shard, j - int(self.first_unit[shard])

    def n_targets(self, j: int) -> int:
        shard, k = self._where(j)
        if self.kind == "sequence":
            return min(self.context, int(self.corpus.shard_lengths[shard]) - k * self.context)
        ends = self.ends[shard]
        return int(ends[k] - (ends[k - 1] if k else -1))

    def n_windows(self, j: int) -> int:
        """Model windows scoring unit j: 1, plus one per document target beyond the first L."""
        return 1 if self.kind == "sequence" else 1 + max(0, self.n_targets(j) - self.context)

    def windows(self, j: int) -> Iterator[Unit]:
        """Unit j's model windows, `n_windows(j)` of them, one at a time."""
        shard, k = self._where(j)
        if self.kind == "sequence":
            return iter([block_unit(self.corpus, shard, k, self.context, self.context)])
        ends = self.ends[shard]
        return document_windows(self.corpus, shard, int(ends[k - 1]) if k else -1, int(ends[k]), self.context)

    def sample(self, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(distinct units, index into them of each draw): s draws uniform over the n units, with replacement.

        Uniform over units, not over tokens: a long document is as likely as a short one (so that a draw's
        expected value is R_hat_unit, the mean of the unit means).
        """
        drawn = rng.integers(0, self.n, size=samples)
        distinct, draws = np.unique(drawn, return_inverse=True)
        return distinct, draws.reshape(-1)

    def chunks(self, units: np.ndarray, max_windows: int) -> Iterator[np.ndarray]:
        """The units given, in order, in runs of at most `max_windows` model windows (a longer unit: alone)."""
        run, size = [], 0
        for j in units.tolist():
            w = self.n_windows(j)
            if run and size + w > max_windows:
                yield np.array(run, dtype=np.int64)
                run, size = [], 0
            run.append(j)
            size += w
        if run:
            yield np.array(run, dtype=np.int64)

    def describe(self) -> str:
        if self.kind == "sequence":
            return (
                f"aligned sequences of {self.context} tokens per shard (a shard's last one may be shorter), each "
                "scored on its own (block rule, stride = context); assumed i.i.d. (the predecessor paper's "
                "assumption: consecutive sequences of one document are dependent in general)"
            )
        return (
            "documents: the tokens after an eot (or a shard's start) up to and including the next eot (or the "
            f"shard's end), each scored on its own under the document rule, in sliding windows beyond its first "
            f"{self.context} targets; assumed i.i.d."
        )


def whole_units(kind: str, corpus: Corpus, context: int, progress: bool = False) -> WholeUnits:
    """The corpus' documents (one chunked eot scan per shard) or aligned sequences of `context` tokens."""
    if kind == "sequence":
        per_shard = -(-corpus.shard_lengths // context)
        return WholeUnits(kind, corpus, context, np.concatenate([[0], np.cumsum(per_shard)]).astype(np.int64), None)
    if kind != "document":
        raise ValueError(f"unknown unit {kind!r}")
    shards = tqdm(corpus.shards, desc="finding documents", unit="shard", disable=not progress)
    ends = [document_ends(shard, corpus.eot) for shard in shards]
    first = np.concatenate([[0], np.cumsum([len(e) for e in ends])]).astype(np.int64)
    return WholeUnits(kind, corpus, context, first, ends)
