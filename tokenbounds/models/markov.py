"""A k-th order Markov chain estimated from token shards (backend "tokenbounds-markov"), priced by its coded counts.

The chain predicts x_i from its context under the document rule with L = k (tokenbounds.data.ngrams: the previous
<= k tokens since the last eot, left-padded with eot), with additive smoothing of pseudo-count a fixed in advance:

    p(y | c) = (n(c, y) + a / V) / (n(c) + a),        n(c) = sum_y n(c, y)

where n(c, y) counts the grams (c, y) of the training shards. An unseen context (n(c) = 0) predicts uniformly.
`logits` reads, at each kept position j, the last k ids of input[: j + 1] by the same padding: fewer than k are read
as a document start, and an eot resets the context, so under `bound --rule document --context L` with L >= k the
prediction is exactly the chain's (a shorter L truncates it: still a valid predictor, a worse one).

Directory (written whole or not at all, by `write_markov`):

    counts.tbmc   the coded count table (tokenbounds.compress.count_tables): the chain's whole description, priced
                  at 8 bits per byte; decoded and checked against the counts when written, decoded again on load
    markov.json   the manifest: format, order, V, eot, pseudo-count, the message's name, bits and sha256, the number of
                  grams and contexts, the corpus counted, the constriction release

Loading decodes the message and evaluates the decoded table: the hypothesis scored is the one priced. It has no
network and so no compute dtype: it runs in float64 and hands float32 logits over; bfloat16 is refused.
"""

import hashlib
import json
import os
import shutil
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from tokenbounds.compress.count_tables import FORMAT, CountTable, decode, encode
from tokenbounds.data.ngrams import check_memory, count_grams, gram_keys, padded_contexts
from tokenbounds.data.shards import Corpus
from tokenbounds.errors import UserError
from tokenbounds.files import read_json
from tokenbounds.models.base import check_device, description
from tokenbounds.models.registry import Backend, register_backend

MANIFEST = "markov.json"
MESSAGE = "counts.tbmc"
FILES = {MANIFEST, MESSAGE}


class MarkovChain:
    """The `LogitModel` view of a decoded count table."""

    max_positions = None  # reads the last k ids of any input
    fills_out = False  # the logits are built in numpy

    def __init__(self, table: CountTable, source: str, manifest: dict):
        k, a, vocab = table.order, table.pseudo_count, table.vocab_size
        self.table, self.source, self.vocab_size = table, source, vocab
        self.verified_manifest = manifest  # the prior prices exactly this decoded message
        self.contexts, first = np.unique(gram_keys(table.grams[:, :k]), return_index=True)  # grams are sorted
        self.starts = np.append(first, len(table.grams))  # the children of context c: grams starts[c]..starts[c+1]
        self.log_denominator = np.log(np.add.reduceat(table.counts, first) + a)
        self.next_ids = table.grams[:, k]
        self.log_numerator = np.log(table.counts + a / vocab)

    def contexts_at(self, ids: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """(B * K, k) padded contexts of the positions `keep` of each row of ids (B, T)."""
        k, eot = self.table.order, self.table.eot
        padded = np.concatenate([np.full((len(ids), k), eot, dtype=np.int64), ids], axis=1)
        windows = sliding_window_view(padded, k, axis=1)[:, keep + 1]  # window j + 1 ends at input position j
        return padded_contexts(windows.reshape(len(ids) * len(keep), k), eot)

    def log_probs(self, contexts: np.ndarray) -> np.ndarray:
        """(Q, V) float64 log p(. | c) for padded contexts (Q, k)."""
        queries = gram_keys(contexts)
        at = np.minimum(np.searchsorted(self.contexts, queries), len(self.contexts) - 1)
        found = self.contexts[at] == queries
        log_den = np.where(found, self.log_denominator[at], np.log(self.table.pseudo_count))
        out = np.repeat(np.log(self.table.pseudo_count / self.vocab_size) - log_den[:, None], self.vocab_size, axis=1)
        rows = np.flatnonzero(found)
        lo, hi = self.starts[at[rows]], self.starts[at[rows] + 1]
        lengths = hi - lo
        row_of = np.repeat(rows, lengths)
        gram = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(lo, lengths)
        out[row_of, self.next_ids[gram]] = self.log_numerator[gram] - log_den[row_of]
        return out

    def logits(self, input_ids: torch.Tensor, keep: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        ids, at = input_ids.cpu().numpy().astype(np.int64), keep.cpu().numpy().astype(np.int64)
        log_probs = self.log_probs(self.contexts_at(ids, at))
        return torch.from_numpy(log_probs.astype(np.float32)).reshape(len(ids), len(at), self.vocab_size)

    def describe(self) -> dict:
        t, m = self.table, self.verified_manifest
        return description(
            backend="tokenbounds-markov",
            source=self.source,
            format=f"{FORMAT} directory (count-table message decoded and verified)",
            architecture=f"Markov chain of order {t.order}",
            n_parameters=int(len(t.grams)),
            vocab_size=self.vocab_size,
            compute_dtype="float32",
            device="cpu",
            details={
                "order": t.order,
                "pseudo_count": t.pseudo_count,
                "smoothing": "p(y | c) = (n(c, y) + a / V) / (n(c) + a), a = pseudo_count",
                "context": f"document rule, L = {t.order}: the previous <= {t.order} tokens since the last eot",
                "n_grams": int(len(t.grams)),
                "n_contexts": int(len(self.contexts)),
                "message_bits": m["message_bits"],
                "corpus": m["corpus"],
            },
        )


def write_markov(corpus: Corpus, order: int, pseudo_count: float, out: Path, max_memory: int, progress=False) -> dict:
    """Count the chain of order k on `corpus` into the new directory `out`; return its manifest.

    Refuses (UserError, before counting) an order whose memory estimate exceeds `max_memory` bytes. The message is
    decoded back and compared with the counts before anything is written."""
    vocab = corpus.vocab_size or corpus.scan_max_id() + 1
    check_memory(corpus, order, vocab, max_memory)
    grams, counts = count_grams(corpus, order, progress=progress)
    table = CountTable(order, vocab, corpus.eot, float(pseudo_count), grams, counts)
    message = encode(table)
    if decode(message) != table:
        raise RuntimeError("the count-table code did not decode back to the counts")
    manifest = {
        "format": FORMAT,
        "version": 1,
        "unit": "bits",
        "order": order,
        "vocab_size": vocab,
        "eot": corpus.eot,
        "pseudo_count": float(pseudo_count),
        "message": MESSAGE,
        "message_bits": 8 * len(message),
        "message_sha256": hashlib.sha256(message).hexdigest(),
        "extra_bits": 0.0,
        "n_grams": int(len(grams)),
        "n_contexts": int(len(np.unique(gram_keys(grams[:, :order])))),
        "bits_per_gram": 8 * len(message) / len(grams),
        "corpus": {"tokens": corpus.n_tokens, "shards": list(corpus.names)},
        "constriction": version("constriction"),
    }
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    (partial / MESSAGE).write_bytes(message)
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(partial, out)
    return manifest


def read_markov(path: Path) -> tuple[CountTable, dict]:
    """Decode and verify a chain directory -> (table, manifest); UserError when anything does not match."""
    manifest = read_json(path / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path / MANIFEST} is not a tokenbounds Markov chain manifest")
    unexpected = sorted(p.name for p in path.iterdir() if p.name not in FILES)
    if unexpected:
        raise UserError(f"{path} holds unexpected files for a Markov chain ({', '.join(unexpected[:3])})")
    message_file = path / MESSAGE
    if not message_file.is_file():
        raise UserError(f"{message_file} is missing: the count table is the chain's whole description")
    message = message_file.read_bytes()
    if hashlib.sha256(message).hexdigest() != manifest.get("message_sha256") or manifest.get("message_bits") != 8 * len(
        message
    ):
        raise UserError(f"{message_file} and {MANIFEST} do not match (sha256 or length): refusing to bound it")
    table = decode(message)
    claimed = tuple(manifest.get(key) for key in ("order", "vocab_size", "eot", "pseudo_count", "n_grams"))
    if claimed != (table.order, table.vocab_size, table.eot, table.pseudo_count, len(table.grams)):
        raise UserError(f"{MANIFEST} and the decoded {MESSAGE} do not match (order, V, eot, pseudo-count or grams)")
    return table, manifest


@register_backend("tokenbounds-markov")
class Markov(Backend):
    label = "Markov chain directory from `tokenbounds study markov` (markov.json + counts.tbmc)"
    compute_dtypes = ("float32",)
    dtype_refusal = "a Markov chain is a table of counts with no network to run in bfloat16 (it computes in float64)"

    def can_open(self, path: Path) -> bool:
        return path.is_dir() and (path / MANIFEST).is_file()

    def load(self, path: Path, compute_dtype: str, device: str) -> MarkovChain:
        check_device(device)
        if device != "cpu":
            raise UserError("Markov chains are evaluated on the CPU (numpy); drop --device")
        table, manifest = read_markov(path)
        return MarkovChain(table, str(path), manifest)

    def priced_files(self, path: Path) -> list[Path]:
        return [path / MESSAGE]
