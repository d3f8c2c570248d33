"""Batched scoring: units in, per-target log-probability, rank and smoothed entropies out.

For each target y predicted from logits z (float32, whatever the compute dtype):

    log p(y)  = -ln sum_v exp(z_v - z_y)                    (natural log; = z_y - logsumexp(z))
    rank(y)   = #{v : z_v >= z_y} - 1                       (0 = the model's top token alone; no full sort)
    H_alpha   ~ -sum_v q_v log2 q_v,  q = (1 - alpha) softmax(z) + alpha / V   (bits, per requested alpha)
    outside_k ~ 1 - (mass of the k most probable tokens)    (per requested k)

H_alpha and outside_k are eb's centrings, computed from one histogram of p per row (stats/centring.py states how and
how close): no top-k search and no per-alpha pass over the vocabulary.

Units are scored in batches sorted by length and right-padded: the model is causal, so padding after a
row's last real token cannot change that row's outputs, and no attention mask is needed. Logits are only
computed at the positions that predict a target.

The rank counts ties against the model (the rule of `tokenbounds.stats.topk`, which the coverage simulation
applies too): constant logits give rank V - 1, never a top-1 hit.

The rank is a float32 count of the logits below z_y (exact: integers below 2^24). Without centrings exp(z - z_y)
sums to 1 / p(y), so no max pass is needed (where a sum overflows, a target ~80 nats or more below the row's top,
or meets a NaN / inf logit, the max-shifted log-softmax is used). With them, p is normalised from the row's max
instead, so that no rounding lets the centrings see the target. Every exp is computed as exp2(x log2 e): Sleef's
float32 exp2 costs half its exp, both within about an ulp. Every V-wide scratch tensor lives in a `Workspace`
reused from one batch to the next.

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
HISTOGRAM_ROWS = ROW_CHUNK // 2  # their int64 bin indices fill the 16-row float32 scratch buffer
GROUP_ROWS = 128  # histograms reduced together (dot products, cumulative sums): (128, N_BINS) float32, 4 MB
LOG2E = 1.0 / math.log(2.0)
MAX_VOCAB = 1 << 24  # float32 counts up to it exactly (the ranks)


class Workspace:
    """Storage reused from one batch to the next: the logits (`LogitModel.logits`' `out`) and the statistics'
    scratch. A fresh tensor of a few MB costs a page fault per 4 KiB on first touch: ~35 ms for 1,024 x 49,152
    logits on a CPU, and as much again for the statistics' scratch of one window. Each named tensor grows to the
    largest size asked for and is reused from then on; pass one workspace for all of a run's batches."""

    def __init__(self):
        self._storage: dict[str, torch.Tensor] = {}

    def tensor(self, name: str, shape: tuple[int, ...], dtype=torch.float32, device=None) -> torch.Tensor:
        """An uninitialised tensor of `shape`, the storage last handed out under `name` where it is large enough."""
        size, device = math.prod(shape), torch.device("cpu") if device is None else device
        held = self._storage.get(name)
        if held is None or held.numel() < size or held.dtype != dtype or held.device != device:
            self._storage.pop(name, None)  # freed before the larger one is allocated
            held = self._storage[name] = torch.empty(size, dtype=dtype, device=device)
        return held[:size].view(shape)


def _ranks(z: torch.Tensor, target_logit: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """#{v : z_v >= z_y} - 1 per row (ties count against the model, stats/topk.py), exactly.

    It is V - 1 - #{v : z_v < z_y}: the comparison is written as float32 0s and 1s into the scratch and summed, which
    is exact in any order, every partial sum being an integer below 2^24 (V <= MAX_VOCAB). A tie, -0 against +0
    included, counts against the model, and a -inf target has rank V - 1. Rows holding NaN or +inf are refused by
    the caller. (The comparison's bool tensor and its integer sum cost twice as much on a CPU.)
    """
    less = torch.lt(z, target_logit, out=scratch).sum(dim=-1)
    return (z.shape[1] - 1) - less.long()


@functools.lru_cache(maxsize=8)
def _centring_tables(alphas: tuple[float, ...], vocab: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Per-bin weights k(r * midpoint) from ENTROPY_FLOOR up (n_alphas, bins), the alphas, the rates r,
    [a, a + Delta] in nats, the bin midpoints from TOPK_FLOOR up in descending order (with a 0 appended: the
    slope past the last bin) and the columns that read them so, on `device` (cached there: not copied again for
    every group of rows)."""
    rates = [(1.0 - a) * vocab / a for a in alphas]
    low = [-math.log1p(-a + a / vocab) for a in alphas]
    high = [math.log(vocab / a) for a in alphas]
    descending = np.append(centring.bin_midpoints()[centring.FLOOR_BIN :][::-1], 0.0)
    tables = tuple(
        torch.tensor(np.asarray(t), dtype=torch.float64, device=device)
        for t in (centring.bin_weights(alphas, vocab).T.copy(), alphas, rates, low, high, descending)
    )
    # The columns of the float64 histograms (the bins from ENTROPY_FLOOR up) from the top down to TOPK_FLOOR.
    live, first = centring.N_BINS - centring.ENTROPY_FLOOR_BIN, centring.FLOOR_BIN - centring.ENTROPY_FLOOR_BIN
    reverse = torch.arange(live - 1, first - 1, -1, device=device)
    return (*tables, reverse)


def _histogram_centrings(
    top: torch.Tensor, hist: torch.Tensor, space: Workspace, alphas: list[float], ks: list[int], vocab: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The entropy centrings (rows, n_alphas) in bits and the top-k centrings (rows, n_ks) from p_top (float32) and
    the tail's histogram (float32, rows x N_BINS): `centring.entropy_from_histogram` and
    `centring.outside_from_histogram` in torch, over many rows at once. The bins from ENTROPY_FLOOR up are copied
    to float64, the ones below enter by their float32 sum. Every intermediate of the histograms' shape lives in
    `space`: a fresh few-MB tensor per group of rows (a flip, a cumulative sum) costs its page faults again."""
    weights_t, alpha, rates, low, high, descending, reverse = _centring_tables(tuple(alphas), vocab, top.device)
    top = top.double()[:, None]
    floor = centring.ENTROPY_FLOOR_BIN
    shape = (len(top), hist.shape[1] - floor)
    live = space.tensor("float64 histograms", shape, torch.float64, top.device).copy_(hist[:, floor:])
    entropies = outside = None
    if alphas:
        x = top * rates
        safe = torch.where(x < 1e-8, 1.0, x)
        k_top = torch.where(x < 1e-8, 1.0 + x / 2.0, torch.log1p(safe) * (1.0 + 1.0 / safe))
        # k = 1 below the floor. Their float32 sum (a float64 one costs a 4 MB temporary) is off by at most
        # 4,287 x 2^-24 (2.6e-4) of their mass, itself below V 2^-60 (centring.py): under 4e-15 nats for V <= 2^24.
        below = hist[:, :floor].sum(dim=1).double()[:, None]
        binned = (weights_t @ live.T).T + below  # this product order runs 2.7x faster than live @ weights
        h_nats = torch.log(vocab / alpha) - (1.0 - alpha) * (top * k_top + binned)
        entropies = (torch.minimum(torch.maximum(h_nats, low), high) / math.log(2.0)).float()
    if ks:
        shape = (len(top), len(reverse))
        descending_mass = space.tensor("descending", shape, torch.float64, top.device)
        mass = torch.gather(live, 1, reverse.expand(shape), out=descending_mass)  # index_select: 3x slower
        cum_mass = torch.cumsum(mass, 1, out=space.tensor("cumulative mass", shape, torch.float64, top.device))
        cum_count = mass.div_(descending[:-1]).cumsum_(1)
        want = torch.tensor([float(k - 1) for k in ks], dtype=torch.float64, device=top.device)
        idx = torch.searchsorted(cum_count, want.expand(len(top), -1).contiguous())  # first bin reaching k - 1
        before, filled = (idx - 1).clamp_min_(0), idx > 0  # the bins above it, if any
        prev_mass = torch.where(filled, cum_mass.gather(1, before), 0.0)
        prev_count = torch.where(filled, cum_count.gather(1, before), 0.0)
        in_top = top + prev_mass + (want - prev_count) * descending[idx]
        outside = (1.0 - in_top).clamp(0.0, 1.0).float()
        outside[:, torch.tensor([k >= vocab for k in ks], device=top.device)] = 0.0  # nothing is outside
    return entropies, outside


def _exp_sum(z: torch.Tensor, shift: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(z - shift) into `out` and its row sums. Computed as exp2((z - shift) log2 e): Sleef's float32 exp2 costs
    half its exp, and the product's rounding moves the result by |z - shift| 2^-24 relatively, as the
    subtraction's own rounding already does."""
    e = torch.sub(z, shift, out=out).mul_(LOG2E).exp2_()
    return e, e.sum(dim=-1, keepdim=True)


def _logp_and_rank(
    z: torch.Tensor, target_logit: torch.Tensor, out: torch.Tensor, scratch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(y) and the rank without the centrings: sum_v exp(z_v - z_y) = 1 / p(y), so log p(y) = -ln of that sum
    needs no max pass. Where a sum is not finite (it overflows when the target lies ~80 nats or more below the top;
    or a NaN, an inf or a -inf target) the chunk takes the max-shifted log-softmax instead. (The centrings cannot
    shift by z_y: their p must not depend on the target.)"""
    rank = _ranks(z, target_logit, scratch)
    total = torch.sub(z, target_logit, out=out).mul_(LOG2E).exp2_().sum(dim=-1)
    if bool(torch.isfinite(total).all()):
        return total.log().neg_(), rank
    peak = z.amax(dim=-1, keepdim=True)
    _, total = _exp_sum(z, peak, out)
    return ((target_logit - peak) - total.log())[:, 0], rank  # non-finite for the rows the caller refuses


def _target_stats(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alphas: list[float],
    ks: list[int],
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor, ...]:
    """Statistics of (N, V) float32 logits for N targets (their scratch in `workspace`, a fresh one if None).

    The V-wide passes run a few rows at a time (memory-bound otherwise); the histograms' reductions run over
    GROUP_ROWS rows at once. The centrings are the shipped ones, `tokenbounds.stats.centring` (the note there bounds
    their distance to the exact entropy and top-k mass): one V-wide histogram of float32 p per row serves every
    alpha and every k, and p_top = 1 / sum exp(z - max z) is exact. They depend on the logits only, never on the
    target, not even through rounding: p is normalised from the row's max (lotfi's path shifts by z_y instead).
    """
    n, vocab = logits.shape
    if vocab > MAX_VOCAB:
        raise ValueError(f"a vocabulary of {vocab} ids is more than the {MAX_VOCAB} the scorer counts exactly")
    device = logits.device
    space = Workspace() if workspace is None else workspace
    logp = torch.empty(n, dtype=torch.float32, device=device)
    rank = torch.empty(n, dtype=torch.int64, device=device)
    centred = bool(alphas or ks)
    width = min(ROW_CHUNK, n)
    probs = space.tensor("probs", (width, vocab), device=device)
    scratch = space.tensor("scratch", (width, vocab), device=device)
    if centred:
        sound = torch.ones(n, dtype=torch.bool, device=device)
        top = torch.empty(n, dtype=torch.float32, device=device)
        hist = space.tensor("histograms", (min(GROUP_ROWS, n), centring.N_BINS), device=device)
        half = min(HISTOGRAM_ROWS, width // 2)
        # int32 indices would be copied to int64 by scatter_add_ (slower): the scratch holds `half` rows of int64
        bins = scratch.view(-1)[: 2 * half * vocab].view(torch.int64).view(half, vocab) if half else None
        entropies = torch.empty(n, len(alphas), dtype=torch.float32, device=device) if alphas else None
        outside = torch.empty(n, len(ks), dtype=torch.float32, device=device) if ks else None
    for group in range(0, n, GROUP_ROWS):
        end = min(group + GROUP_ROWS, n)
        for start in range(group, end, ROW_CHUNK):
            rows = slice(start, min(start + ROW_CHUNK, end))
            z = logits[rows]
            m = z.shape[0]
            target_logit = z.gather(1, targets[rows, None])
            if not centred:
                logp[rows], rank[rows] = _logp_and_rank(z, target_logit, probs[:m], scratch[:m])
                continue
            # The centrings must not see the target, not even through rounding: p is normalised from the max.
            peak = z.amax(dim=-1, keepdim=True)
            e, total = _exp_sum(z, peak, probs[:m])
            logp[rows] = ((target_logit - peak) - total.log())[:, 0]  # non-finite for the rows refused below
            rank[rows] = _ranks(z, target_logit, scratch[:m])
            if not math.isfinite(float(peak.sum())):  # NaN / +inf / all -inf (or a sum that overflows)
                fine = sound[rows] = torch.isfinite(peak[:, 0])  # refused by the caller; keep the passes in range
                z = torch.where(fine[:, None], z, 0.0)
                peak = z.amax(dim=-1, keepdim=True)
                e, total = _exp_sum(z, peak, probs[:m])
            inverse = total.reciprocal()
            p = e.mul_(inverse)  # float32 p, binned by its bit pattern (centring.py); the top token's p is 1 / total
            top[rows] = inverse[:, 0]
            at = start - group
            hist[at : at + m].zero_()
            step = max(half, 1)
            for sub in range(0, m, step):
                part = p[sub : sub + step]
                if bins is None:  # a single row: its own int64 indices
                    index = torch.bitwise_right_shift(part.view(torch.int32), centring.BIN_SHIFT).long()
                else:
                    index = bins[: len(part)].copy_(part.view(torch.int32)).bitwise_right_shift_(centring.BIN_SHIFT)
                # float32 sums, in index order, as the reference's np.add.at (centring.py bounds their rounding)
                hist[at + sub : at + sub + len(part)].scatter_add_(1, index, part)
        if centred:
            rows = slice(group, end)
            h = hist[: end - group]
            top_bin = torch.bitwise_right_shift(top[rows].view(torch.int32), centring.BIN_SHIFT).long()[:, None]
            h.scatter_(1, top_bin, (h.gather(1, top_bin) - top[rows, None]).clamp_min_(0.0))  # the top token is exact
            entropy, out = _histogram_centrings(top[rows], h, space, alphas, ks, vocab)
            if alphas:
                entropies[rows] = torch.where(sound[rows, None], entropy, math.nan)
            if ks:
                outside[rows] = torch.where(sound[rows, None], out, math.nan)
    if not centred:
        return logp, rank, None, None
    return logp, rank, entropies, outside


def centrings(probs: np.ndarray, alphas=(), ks=()) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The centrings this scorer ships for distributions p along the last axis (numpy): the entropy centrings
    (..., n_alphas) in bits and the top-k centrings (..., n_ks), computed by `_target_stats` itself on the logits
    log p (float32), so that the coverage simulation bounds with the very function the pipeline calls."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logits = torch.from_numpy(np.log(p.reshape(-1, p.shape[-1])).astype(np.float32))
    targets = torch.zeros(len(logits), dtype=torch.int64)  # the centrings never see the target (tested)
    with torch.inference_mode():
        _, _, entropy, outside = _target_stats(logits, targets, list(alphas), list(ks))

    def shaped(t: torch.Tensor | None) -> np.ndarray | None:
        return None if t is None else t.numpy().astype(np.float64).reshape(*p.shape[:-1], t.shape[1])

    return shaped(entropy), shaped(outside)


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
    model: LogitModel,
    batch: Batch,
    *,
    alphas: list[float] | None = None,
    ks: list[int] | None = None,
    pad_id: int = 0,
    workspace: Workspace | None = None,
) -> BatchScores:
    """One forward pass over the batch's right-padded rows, and every target's statistics (the logits in the
    workspace where the backend can write them there, and the statistics' scratch: pass one workspace for all of a
    run's batches)."""
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
    workspace = Workspace() if workspace is None else workspace
    per_row = []
    with torch.inference_mode():
        shape = (len(rows), len(keep), model.vocab_size)
        out = workspace.tensor("logits", shape, device=device) if model.fills_out else None  # else never allocated
        logits = model.logits(ids.to(device), keep, out=out)
        for r, u in enumerate(rows):
            sel = logits[r, u.first - 1 - lo : len(u.tokens) - 1 - lo].float()
            targets = torch.from_numpy(u.tokens[u.first :]).to(device)
            stats = _target_stats(sel, targets, alphas, ks, workspace)
            stats = tuple(None if t is None else t.cpu().numpy() for t in stats)
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
    workspace = Workspace()
    for batch in plan:
        parts.append((batch, score_batch(model, batch, alphas=alphas, ks=ks, pad_id=pad_id, workspace=workspace)))
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
