"""Batched scoring: units in, per-target log-probability, rank and smoothed entropies out.

For each target y predicted from logits z (float32, whatever the compute dtype):

    log p(y)  = z_y - logsumexp(z)                          (natural log)
    rank(y)   = #{v : z_v >= z_y} - 1                       (0 = the model's top token alone; no full sort)
    H_alpha   = -sum_v q_v log2 q_v,  q = (1 - alpha) softmax(z) + alpha / V   (bits, per requested alpha)
    outside_k = 1 - (mass of the k most probable tokens)    (per requested k; torch.topk, not a sort)

Units are scored in batches sorted by length and right-padded: the model is causal, so padding after a
row's last real token cannot change that row's outputs, and no attention mask is needed. Logits are only
computed at the positions that predict a target.

The rank counts ties against the model (the rule of `tokenbounds.stats.topk`, which the coverage simulation
applies too): constant logits give rank V - 1, never a top-1 hit.

Nothing non-finite reaches the statistics. Every input id (context and target) is checked against the model's
vocabulary before the forward pass, and a NaN or +inf logit, or a row whose logits are all -inf, is refused with
the corpus position it predicts. The logit check costs one isfinite over the log-probabilities already on the
host: log p = z_y - logsumexp(z) is finite only when the row holds no NaN or +inf and some finite value, so only
rows with a non-finite log p are looked at. A -inf logit alone is a legal p = 0 (smoothing gives it alpha / V).
"""

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from tokenbounds.data.units import Unit
from tokenbounds.errors import UserError
from tokenbounds.models.base import LogitModel


@dataclass
class Scores:
    """Per-target results, concatenated over units in the order given; `unit` maps targets to units."""

    logp: np.ndarray  # float32, natural log of the model probability of the target
    rank: np.ndarray  # int64
    unit: np.ndarray  # int64 index of the unit each target came from
    positions: np.ndarray  # int64 global corpus positions of the targets
    entropy_bits: np.ndarray | None = None  # (n_targets, n_alphas) smoothed entropies
    outside_topk: np.ndarray | None = None  # (n_targets, n_ks) model mass outside the top k
    input_tokens: int = 0  # tokens fed to the model, padding excluded


ROW_CHUNK = 16  # logit rows processed together: a (16, V) float32 block stays in cache across the passes below


def _target_stats(
    logits: torch.Tensor, targets: torch.Tensor, alphas: list[float], ks: list[int]
) -> tuple[torch.Tensor, ...]:
    """Statistics of (N, V) float32 logits for N targets, computed a few rows at a time (memory-bound otherwise)."""
    n, vocab = logits.shape
    logp = torch.empty(n, dtype=torch.float32, device=logits.device)
    rank = torch.empty(n, dtype=torch.int64, device=logits.device)
    entropies = torch.empty(n, len(alphas), device=logits.device) if alphas else None
    outside = torch.empty(n, len(ks), device=logits.device) if ks else None
    top_k = min(max(ks), vocab) if ks else 0  # k >= V: the top k is everything, nothing is outside
    for start in range(0, n, ROW_CHUNK):
        rows = slice(start, start + ROW_CHUNK)
        z = logits[rows]
        lse = torch.logsumexp(z, dim=-1)
        target_logit = z.gather(1, targets[rows, None])[:, 0]
        logp[rows] = target_logit - lse
        # Ties count against the model (stats/topk.py): the target itself is the one v with z_v >= z_y not counted.
        rank[rows] = (z >= target_logit[:, None]).sum(dim=-1) - 1
        if not (alphas or ks):
            continue
        probs = (z - lse[:, None]).exp()
        if alphas:
            q = torch.empty_like(probs)
            for j, alpha in enumerate(alphas):
                # q = (1 - alpha) p + alpha / V > 0; H = -sum q log2 q, with xlogy fusing q * log q
                torch.add(probs, alpha / vocab / (1.0 - alpha), out=q).mul_(1.0 - alpha)
                entropies[rows, j] = -torch.special.xlogy(q, q).sum(dim=-1) / math.log(2.0)
        if ks:
            top = torch.topk(probs, top_k, dim=-1, sorted=True).values.cumsum(dim=-1)
            outside[rows] = torch.stack([(1.0 - top[:, min(k, vocab) - 1]).clamp_min(0.0) for k in ks], dim=-1)
    return logp, rank, entropies, outside


def _nonfinite_row(logits: torch.Tensor, logp: np.ndarray) -> tuple[int, str] | None:
    """(row, what) of the first row of (N, V) logits that holds NaN or +inf or only -inf, else None.

    log p = z_y - logsumexp(z) is finite exactly when the row is sound and p(y) > 0, so the usual case costs one
    isfinite over the N log-probabilities already on the host; rows with log p = -inf or NaN are looked at one by
    one (log p = -inf with a finite logsumexp is a legal p = 0).
    """
    if np.isfinite(logp).all():
        return None
    for row in np.flatnonzero(~np.isfinite(logp)).tolist():
        z = logits[row]
        if bool(torch.isnan(z).any()):
            return row, "a NaN logit"
        if bool((z == math.inf).any()):
            return row, "a +inf logit"
        if bool((z == -math.inf).all()):
            return row, "only -inf logits (no token has positive probability)"
        if not math.isfinite(float(torch.logsumexp(z, dim=-1))):  # finite logits whose logsumexp overflows
            return row, f"logits too large for float32 (max {float(z.max()):.3g})"
    return None


def _check_ids(tokens: np.ndarray, rows: list[Unit], vocab: int) -> None:
    """Refuse any id outside [0, V) among a batch's tokens (B, T+1: inputs and targets), naming where it was read."""
    if int(tokens.max()) < vocab and int(tokens.min()) >= 0:
        return
    found = []  # (corpus position, id, where) of every offending token; only built when there is one
    for r, j in np.argwhere((tokens < 0) | (tokens >= vocab)).tolist():
        u = rows[r]
        if j >= u.first:
            position = int(u.positions[j - u.first])
            where = f"corpus position {position} (a target)"
        else:  # a unit's window is contiguous in the corpus up to its targets: context token j lies first - j before
            position = int(u.positions[0]) - (u.first - j)
            where = f"corpus position {position} (in the context of the target at {int(u.positions[0])})"
        found.append((position, int(tokens[r, j]), where))
    _, token, where = min(found)
    raise UserError(
        f"token id {token} at {where} is outside the model's vocabulary of {vocab} ids: "
        "the corpus holds an id the model cannot read (was a shard edited after `prepare`?)"
    )


def _batches(units: list[Unit], max_tokens: int, max_rows: int) -> Iterator[list[int]]:
    """Indices of units grouped by length so that B * T_max <= max_tokens and B * (kept positions) <= max_rows."""
    order = sorted(range(len(units)), key=lambda i: (len(units[i].tokens), units[i].first))
    batch: list[int] = []
    longest, lo = 0, 1 << 62
    for i in order:
        length, first = len(units[i].tokens) - 1, units[i].first - 1
        grown_longest, grown_lo = max(longest, length), min(lo, first)
        n = len(batch) + 1
        if batch and (n * grown_longest > max_tokens or n * (grown_longest - grown_lo) > max_rows):
            yield batch
            batch, grown_longest, grown_lo = [], length, first
        batch.append(i)
        longest, lo = grown_longest, grown_lo
    if batch:
        yield batch


def score_units(
    model: LogitModel,
    units: Iterable[Unit],
    *,
    alphas: list[float] | None = None,
    ks: list[int] | None = None,
    max_tokens: int = 8192,
    logit_bytes: int = 256 << 20,
    buffer_units: int = 4096,
    progress: bool = True,
    total: int | None = None,  # targets, for the progress bar
    pad_id: int = 0,
) -> Scores:
    """Score every target of every unit. Units are consumed in buffers, so an iterator may be huge."""
    alphas, ks = list(alphas or []), list(ks or [])
    if not 0 <= pad_id < model.vocab_size:
        raise UserError(f"padding id {pad_id} is outside the model's vocabulary of {model.vocab_size} ids")
    device = getattr(model, "device", torch.device("cpu"))
    max_logit_rows = max(1, logit_bytes // (4 * model.vocab_size))  # float32 logits held at once, about
    out: dict[str, list] = {"logp": [], "rank": [], "unit": [], "positions": [], "entropy": [], "outside": []}
    bar = tqdm(total=total, unit="tok", desc="scoring", disable=not progress, dynamic_ncols=True)
    base = input_tokens = 0
    buffer: list[Unit] = []

    def flush():
        nonlocal base, input_tokens
        results: dict[int, tuple] = {}
        for batch in _batches(buffer, max_tokens, max_logit_rows):
            rows = [buffer[i] for i in batch]
            length = max(len(u.tokens) - 1 for u in rows)
            lo = min(u.first for u in rows) - 1
            tokens = np.full((len(rows), length + 1), pad_id, dtype=np.int64)
            for r, u in enumerate(rows):
                tokens[r, : len(u.tokens)] = u.tokens
            _check_ids(tokens, rows, model.vocab_size)  # every id read, context and target, one max and min
            ids = torch.from_numpy(np.ascontiguousarray(tokens[:, :-1]))
            keep = torch.arange(lo, length, device=device)
            with torch.inference_mode():
                logits = model.logits(ids.to(device), keep)
                for r, u in enumerate(rows):
                    sel = logits[r, u.first - 1 - lo : len(u.tokens) - 1 - lo].float()
                    targets = torch.from_numpy(u.tokens[u.first :]).to(device)
                    stats = tuple(
                        None if t is None else t.cpu().numpy() for t in _target_stats(sel, targets, alphas, ks)
                    )
                    bad = _nonfinite_row(sel, stats[0])
                    if bad is not None:
                        raise UserError(
                            f"the model's logits predicting corpus position {int(u.positions[bad[0]])} hold "
                            f"{bad[1]}: refusing to bound a model with non-finite outputs "
                            "(fp16 overflow? a corrupt checkpoint?)"
                        )
                    results[batch[r]] = stats
            bar.update(sum(u.n_targets for u in rows))
            input_tokens += sum(len(u.tokens) - 1 for u in rows)
        for i, unit in enumerate(buffer):
            logp, rank, entropy, outside = results[i]
            out["logp"].append(logp.astype(np.float32))
            out["rank"].append(rank.astype(np.int64))
            out["unit"].append(np.full(unit.n_targets, base + i, dtype=np.int64))
            out["positions"].append(unit.positions)
            if entropy is not None:
                out["entropy"].append(entropy)
            if outside is not None:
                out["outside"].append(outside)
        base += len(buffer)
        buffer.clear()

    for unit in units:
        buffer.append(unit)
        if len(buffer) >= buffer_units:
            flush()
    if buffer:
        flush()
    bar.close()
    if not out["logp"]:
        raise ValueError("no units to score")
    return Scores(
        logp=np.concatenate(out["logp"]),
        rank=np.concatenate(out["rank"]),
        unit=np.concatenate(out["unit"]),
        positions=np.concatenate(out["positions"]),
        entropy_bits=np.concatenate(out["entropy"]) if alphas else None,
        outside_topk=np.concatenate(out["outside"]) if ks else None,
        input_tokens=input_tokens,
    )
