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

import functools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from tokenbounds.data.units import Unit
from tokenbounds.errors import UserError
from tokenbounds.models.base import LogitModel
from tokenbounds.stats import centring


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
TOPK_BLOCK = 16  # the top-k search first picks blocks of this many logits by their maxima (see _top_logits)


def _top_logits(z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest logits of each row of z (values sorted descending, and their indices), like torch.topk.

    torch.topk over all V logits costs more than the rest of the statistics together. Split the vocabulary into
    blocks: the k largest values lie in the k blocks with the largest maxima (a value above the k-th largest t sits
    in a block whose maximum exceeds t, and at most k - 1 values exceed t; and if k blocks have a maximum >= t, they
    hold k values >= t). So one max per block, a topk over the V / TOPK_BLOCK maxima, and a topk over k * TOPK_BLOCK
    candidates give the same values (tied values may come with other tied indices). Any partition into blocks will
    do; block j here is every n-th logit from j (n = V // TOPK_BLOCK), so the maxima are an elementwise max over
    TOPK_BLOCK contiguous runs of n logits, which vectorises; the remainder of V past TOPK_BLOCK * n is a candidate
    throughout.
    """
    rows, vocab = z.shape
    n_blocks = vocab // TOPK_BLOCK
    if n_blocks < 4 * k:  # little to gain
        return torch.topk(z, k, dim=-1, sorted=True)
    maxima = z.unfold(1, n_blocks, n_blocks)[:, :TOPK_BLOCK].amax(dim=1)  # (rows, n_blocks), over a strided view
    chosen = torch.topk(maxima, k, dim=-1, sorted=False).indices
    members = torch.arange(0, TOPK_BLOCK * n_blocks, n_blocks, device=z.device)
    candidates = (chosen[:, None, :] + members[:, None]).reshape(rows, -1)
    if vocab > n_blocks * TOPK_BLOCK:
        rest = torch.arange(n_blocks * TOPK_BLOCK, vocab, device=z.device).expand(rows, -1)
        candidates = torch.cat([candidates, rest], dim=1)
    values, where = torch.topk(z.gather(1, candidates), k, dim=-1, sorted=False)
    values, order = values.sort(dim=-1, descending=True)  # sorting k values is cheaper than a sorted topk
    return values, candidates.gather(1, where.gather(1, order))


def _ranks(z: torch.Tensor, target_logit: torch.Tensor, top_values: torch.Tensor | None, sound: torch.Tensor | None):
    """#{v : z_v >= z_y} - 1 per row (ties count against the model, stats/topk.py), exactly.

    Given each row's k largest logits (sorted descending), a target above the k-th largest has every logit >= it
    among them, so k comparisons give its rank; the other rows (a target not above the k-th largest, or a row the
    caller refuses) are counted over all V logits, one row at a time (a view, no copy).
    """
    if top_values is None:
        return (z >= target_logit).sum(dim=-1, dtype=torch.int32).long() - 1
    at_least = (top_values >= target_logit).sum(dim=-1)
    if top_values.shape[1] < z.shape[1]:
        counted = (target_logit[:, 0] > top_values[:, -1]) & sound
        if not bool(counted.all()):
            for row in torch.nonzero(~counted)[:, 0].tolist():
                at_least[row] = (z[row] >= target_logit[row]).sum()
    return at_least - 1


@functools.lru_cache(maxsize=8)
def _centring_tables(alphas: tuple[float, ...], vocab: int) -> tuple[torch.Tensor, ...]:
    """Per-bin weights k(r * midpoint) (N_BINS, n_alphas), the alphas, the rates r and [a, a + Delta] in nats."""
    rates = [(1.0 - a) * vocab / a for a in alphas]
    low = [-math.log1p(-a + a / vocab) for a in alphas]
    high = [math.log(vocab / a) for a in alphas]
    return tuple(
        torch.tensor(np.asarray(t), dtype=torch.float64)
        for t in (centring.bin_weights(alphas, vocab), alphas, rates, low, high)
    )


def _target_stats(
    logits: torch.Tensor, targets: torch.Tensor, alphas: list[float], ks: list[int]
) -> tuple[torch.Tensor, ...]:
    """Statistics of (N, V) float32 logits for N targets.

    The V-wide passes run a few rows at a time (memory-bound otherwise); what is left per row (k values, a
    histogram's dot products) runs once over all N rows. The entropies are the shipped centring,
    `tokenbounds.stats.centring.binned_smoothed_entropy_bits` (its numpy reference; the note there bounds its
    distance to the exact smoothed entropy): one V-wide histogram of p per row serves every alpha. They depend on
    the logits only, never on the target.
    """
    n, vocab = logits.shape
    device = logits.device
    logp = torch.empty(n, dtype=torch.float32, device=device)
    rank = torch.empty(n, dtype=torch.int64, device=device)
    top_k = min(max([*ks, centring.EXACT_TOP if alphas else 0]), vocab)  # k >= V: nothing is outside the top k
    width = min(ROW_CHUNK, n)
    # Reused across chunks: fresh multi-MB buffers would cost a page fault per 4 KiB every chunk.
    probs = torch.empty(width, vocab, device=device)
    if top_k:
        sound = torch.empty(n, dtype=torch.bool, device=device)
        top_p = torch.empty(n, top_k, dtype=torch.float64, device=device)
    if alphas:
        weights, alpha, rates, low, high = (t.to(device) for t in _centring_tables(tuple(alphas), vocab))
        bins = torch.empty(width, vocab, dtype=torch.int64, device=device)
        hist = torch.empty(width, centring.N_BINS, dtype=torch.float32, device=device)
        binned = torch.empty(n, len(alphas), dtype=torch.float64, device=device)
    for start in range(0, n, ROW_CHUNK):
        rows = slice(start, start + ROW_CHUNK)
        z = logits[rows]
        m = z.shape[0]
        peak = z.amax(dim=-1, keepdim=True)
        e = torch.sub(z, peak, out=probs[:m]).exp_()  # exp(z - max): logsumexp's own pass, kept for p
        total = e.sum(dim=-1, keepdim=True)
        target_logit = z.gather(1, targets[rows, None])
        logp[rows] = ((target_logit - peak) - total.log())[:, 0]
        if not top_k:
            rank[rows] = _ranks(z, target_logit, None, None)
            continue
        fine = sound[rows] = torch.isfinite(peak[:, 0])
        raw = z
        if not bool(fine.all()):  # NaN / +inf / all -inf: refused by the caller; keep the passes below in range
            z = torch.where(fine[:, None], z, 0.0)
            peak = z.amax(dim=-1, keepdim=True)
            e = torch.sub(z, peak, out=probs[:m]).exp_()
            total = e.sum(dim=-1, keepdim=True)
        top_values, top_index = _top_logits(z, top_k)
        rank[rows] = _ranks(raw, target_logit, top_values, fine)
        top_p[rows] = (top_values - peak).double().exp() / total.double()  # exact probabilities of the top k
        if alphas:
            p = e.mul_(1.0 / total)  # float32 p, binned by its bit pattern (centring.py)
            p.scatter_(1, top_index[:, : centring.EXACT_TOP], 0.0)  # the top tokens are counted exactly, not binned
            index = bins[:m].copy_(p.view(torch.int32)).bitwise_right_shift_(centring.BIN_SHIFT)
            # float32 sums, in index order, as the reference's np.add.at (centring.py bounds their rounding)
            h = hist[:m].zero_().scatter_add_(1, index, p)
            binned[rows] = h.double() @ weights
    outside = entropies = None
    if ks:
        mass = top_p.cumsum(dim=-1)[:, [min(k, vocab) - 1 for k in ks]]
        outside = torch.where(sound[:, None], (1.0 - mass).clamp_min(0.0).float(), math.nan)
    if alphas:
        head = top_p[:, : centring.EXACT_TOP, None]
        x = head * rates
        safe = torch.where(x < 1e-8, 1.0, x)
        k_head = torch.where(x < 1e-8, 1.0 + x / 2.0, torch.log1p(safe) * (1.0 + 1.0 / safe))
        exact = (head * k_head).sum(dim=1)  # (N, n_alphas)
        h_nats = torch.log(vocab / alpha) - (1.0 - alpha) * (exact + binned)
        h_bits = (torch.minimum(torch.maximum(h_nats, low), high) / math.log(2.0)).float()
        entropies = torch.where(sound[:, None], h_bits, math.nan)
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


@dataclass(frozen=True)
class Batch:
    """One forward pass of the global batch plan: which units, in the order their rows are stacked."""

    index: int  # position in the plan
    unit_ids: np.ndarray  # int64: each row's index among the units in the order they were given
    units: list[Unit]

    @property
    def n_targets(self) -> int:
        return sum(u.n_targets for u in self.units)


def plan_batches(
    units: Iterable[Unit],
    vocab_size: int,
    *,
    max_tokens: int = 8192,
    logit_bytes: int = 256 << 20,
    buffer_units: int = 4096,
) -> Iterator[Batch]:
    """The global batch plan: units read in buffers of `buffer_units`, each buffer sorted by length into batches.

    The plan depends on the units and these settings only, so every process that walks it sees the same batches
    (a row's float results can depend on what else shares its forward pass: fixing the batches fixes the bits),
    and an iterator of any length is walked in bounded memory.
    """
    max_rows = max(1, logit_bytes // (4 * vocab_size))  # float32 logits held at once, about
    index = base = 0
    buffer: list[Unit] = []

    def flush():
        nonlocal index
        for rows in _batches(buffer, max_tokens, max_rows):
            yield Batch(index, np.asarray(rows, dtype=np.int64) + base, [buffer[i] for i in rows])
            index += 1

    for unit in units:
        buffer.append(unit)
        if len(buffer) >= buffer_units:
            yield from flush()
            base += len(buffer)
            buffer = []
    if buffer:
        yield from flush()


@dataclass
class BatchScores:
    """Per-target results of one batch, its units' targets consecutive in the batch's row order."""

    n_targets: np.ndarray  # int64 per unit (row)
    logp: np.ndarray  # float32, natural log of the model probability of the target
    rank: np.ndarray  # int64
    positions: np.ndarray  # int64 global corpus positions of the targets
    entropy_bits: np.ndarray | None  # (n_targets, n_alphas) smoothed entropies
    outside_topk: np.ndarray | None  # (n_targets, n_ks) model mass outside the top k
    input_tokens: int  # tokens fed to the model, padding excluded


def score_batch(
    model: LogitModel, batch: Batch, *, alphas: list[float] | None = None, ks: list[int] | None = None, pad_id: int = 0
) -> BatchScores:
    """One forward pass over the batch's right-padded rows, and every target's statistics."""
    alphas, ks = list(alphas or []), list(ks or [])
    if not 0 <= pad_id < model.vocab_size:
        raise UserError(f"padding id {pad_id} is outside the model's vocabulary of {model.vocab_size} ids")
    device = getattr(model, "device", torch.device("cpu"))
    rows = batch.units
    length = max(len(u.tokens) - 1 for u in rows)
    lo = min(u.first for u in rows) - 1
    tokens = np.full((len(rows), length + 1), pad_id, dtype=np.int64)
    for r, u in enumerate(rows):
        tokens[r, : len(u.tokens)] = u.tokens
    _check_ids(tokens, rows, model.vocab_size)  # every id read, context and target, one max and min
    ids = torch.from_numpy(np.ascontiguousarray(tokens[:, :-1]))
    keep = torch.arange(lo, length, device=device)
    per_row = []
    with torch.inference_mode():
        logits = model.logits(ids.to(device), keep)
        for r, u in enumerate(rows):
            sel = logits[r, u.first - 1 - lo : len(u.tokens) - 1 - lo].float()
            targets = torch.from_numpy(u.tokens[u.first :]).to(device)
            stats = tuple(None if t is None else t.cpu().numpy() for t in _target_stats(sel, targets, alphas, ks))
            bad = _nonfinite_row(sel, stats[0])
            if bad is not None:
                raise UserError(
                    f"the model's logits predicting corpus position {int(u.positions[bad[0]])} hold "
                    f"{bad[1]}: refusing to bound a model with non-finite outputs "
                    "(fp16 overflow? a corrupt checkpoint?)"
                )
            per_row.append(stats)
    logp, rank, entropy, outside = (
        None if column[0] is None else np.concatenate(column) for column in zip(*per_row, strict=True)
    )
    return BatchScores(
        n_targets=np.array([u.n_targets for u in rows], dtype=np.int64),
        logp=logp.astype(np.float32),
        rank=rank.astype(np.int64),
        positions=np.concatenate([u.positions for u in rows]),
        entropy_bits=entropy,
        outside_topk=outside,
        input_tokens=sum(len(u.tokens) - 1 for u in rows),
    )


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
    """Every target of every unit, in the order given (per-target arrays: for tests and benchmarks; the bound
    itself keeps per-unit sums only, tokenbounds.execution)."""
    bar = tqdm(total=total, unit="tok", desc="scoring", disable=not progress, dynamic_ncols=True)
    parts: list[tuple[Batch, BatchScores]] = []
    plan = plan_batches(
        units, model.vocab_size, max_tokens=max_tokens, logit_bytes=logit_bytes, buffer_units=buffer_units
    )
    for batch in plan:
        parts.append((batch, score_batch(model, batch, alphas=alphas, ks=ks, pad_id=pad_id)))
        bar.update(batch.n_targets)
    bar.close()
    if not parts:
        raise ValueError("no units to score")
    unit = np.concatenate([np.repeat(b.unit_ids, s.n_targets) for b, s in parts])
    order = np.argsort(unit, kind="stable")  # back to the order given; a unit's targets keep theirs

    def column(name: str) -> np.ndarray | None:
        values = [getattr(s, name) for _, s in parts]
        return None if values[0] is None else np.concatenate(values)[order]

    return Scores(
        logp=column("logp"),
        rank=column("rank"),
        unit=unit[order],
        positions=column("positions"),
        entropy_bits=column("entropy_bits"),
        outside_topk=column("outside_topk"),
        input_tokens=sum(s.input_tokens for _, s in parts),
    )
