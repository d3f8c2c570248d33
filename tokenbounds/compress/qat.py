"""Quantization-aware refinement of the codebooks: learnable centroids, assignments fixed.

Every quantized tensor is W = c_g[symbols] (its codebook's centroids indexed by its fixed symbols). The centroids
(float32 during training) are fitted by Adam to the next-token cross-entropy on random training windows
(`data.windows.random_windows`) for a given number of steps, on the CPU; all other tensors stay at their decoded
(message) values. Afterwards the centroids are rounded to float16, sorted, and equal ones merged (symbols remapped,
frequency table recounted), so the message keeps its invariants and the frequencies are unchanged except for merges.
The refined model is the one the message describes and the one bounded; the extra configurations tried (levels,
k-means, steps) are paid through the manifest's extra_bits (`--configs-tried`).

The windows come from the QAT_WINDOWS stream of `seed` (tokenbounds.streams), never `default_rng(seed)`: a bound
with the same seed draws its units from another stream, independent of these windows (they shape the hypothesis).

Because the assignments are fixed, the gradient of a centroid is the sum of the gradients of the weights that use it
(exact, no straight-through approximation needed).
"""

import numpy as np

from tokenbounds.compress.quantize import F16_MAX, Group, QuantizedState
from tokenbounds.errors import UserError
from tokenbounds.streams import QAT_WINDOWS, check_seed, describe, stream


def _nearest(values, codebook):
    """Index of the nearest codebook value for each value (ties to the lower value), via sorted midpoints."""
    import torch

    order = torch.argsort(codebook)
    ordered = codebook[order]
    return order[torch.bucketize(values, (ordered[1:] + ordered[:-1]) / 2)]


def _logits(output):
    """transformers models return an output object, tokenbounds GPTs the logits themselves."""
    return getattr(output, "logits", output)


def refine_codebooks(
    module,
    state: QuantizedState,
    corpus,
    steps: int,
    lr: float = 1e-4,
    batch_size: int = 8,
    length: int = 128,
    seed: int = 0,
    ste: bool = False,
    progress: bool = True,
) -> tuple[QuantizedState, dict]:
    """Fit the centroids of `state` to `corpus` through `module` (a transformers causal LM, or a tokenbounds GPT,
    whose state-dict names are those of `state`). Returns the refined state and a record of the run.

    ste=False: the assignments stay fixed and only the centroids learn. ste=True: every quantized weight also gets a
    latent float value (starting at its centroid); the forward pass uses the nearest centroid of each latent value,
    and the straight-through estimator passes the gradient of the quantized weight to its latent value (and to the
    centroid it uses), so weights can move to other centroids. The final message codes the nearest float16 centroid
    of each latent value: the decoded model is again exactly the model the message describes."""
    import torch
    from torch.func import functional_call
    from tqdm import tqdm

    from tokenbounds.data.windows import random_windows

    if steps < 1 or batch_size < 1 or length < 1 or not lr > 0:
        raise UserError("QAT needs steps, batch size and length >= 1 and a positive learning rate")
    check_seed(seed)
    names = set(module.state_dict())
    unknown = [e.name for e in state.entries if e.name not in names]
    if unknown:
        raise UserError(f"QAT: tensors {unknown[:3]} are not in the model's state dict; cannot refine")
    with torch.no_grad():  # the logits' width, whatever the model class
        vocab = _logits(module(torch.zeros(1, 1, dtype=torch.long))).shape[-1]
    rng = stream(seed, QAT_WINDOWS)  # the evaluation batch, then one batch per step
    eval_batch = torch.from_numpy(random_windows(corpus, batch_size, length + 1, rng, vocab_size=vocab))

    decoded = state.dequantize()
    centroids = [torch.nn.Parameter(torch.from_numpy(g.centroids.astype(np.float32))) for g in state.groups]
    index = {e.name: torch.from_numpy(e.symbols.astype(np.int64)) for e in state.entries if e.kind == "quantized"}
    fixed = {e.name: torch.from_numpy(decoded[e.name]) for e in state.entries if e.kind == "raw"}
    by_name = {e.name: e for e in state.entries}

    latent = {}
    if ste:
        latent = {name: torch.nn.Parameter(torch.from_numpy(decoded[name].reshape(-1).copy())) for name in index}

    def weights() -> dict:
        w = dict(fixed)
        for name, idx in index.items():
            e = by_name[name]
            codebook = centroids[e.group]
            if ste:
                x = latent[name]
                with torch.no_grad():
                    idx = _nearest(x, codebook)
                w[name] = (codebook[idx] + (x - x.detach())).view(e.shape)  # value quantized, gradient straight
            else:
                w[name] = codebook[idx].view(e.shape)
        for e in state.entries:
            if e.kind == "alias":
                w[e.name] = w[e.target]
        return w

    def loss_of(batch: torch.Tensor, w: dict) -> torch.Tensor:
        logits = _logits(functional_call(module, w, (batch[:, :-1],)))
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))

    module.eval()  # no dropout: we fit the deterministic predictor that will be bounded
    with torch.no_grad():
        before = float(loss_of(eval_batch, weights()))
    opt = torch.optim.Adam([*centroids, *latent.values()], lr=lr)
    losses = []
    for _ in tqdm(range(steps), desc="QAT (centroids)", disable=not progress, leave=False):
        batch = torch.from_numpy(random_windows(corpus, batch_size, length + 1, rng, vocab_size=vocab))
        opt.zero_grad()
        loss = loss_of(batch, weights())
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))

    groups, entries = [], list(state.entries)
    for c in centroids:
        values = c.detach().numpy().astype(np.float64)
        if not np.all(np.abs(values) <= F16_MAX):
            raise UserError("QAT drove a centroid beyond float16's range; lower --qat-lr")
        uniq, inverse = np.unique(values.astype(np.float16), return_inverse=True)
        groups.append((uniq, inverse.astype(np.int32)))
    new_groups = [Group(u, np.zeros(len(u), dtype=np.int64)) for u, _ in groups]
    for e in entries:
        if e.kind == "quantized":
            uniq = groups[e.group][0]
            if ste:  # each weight takes the float16 centroid nearest to its latent value
                final = torch.from_numpy(uniq.astype(np.float32))
                e.symbols = _nearest(latent[e.name].detach(), final).numpy().astype(np.int32)
            else:
                e.symbols = groups[e.group][1][e.symbols]
            new_groups[e.group].counts += np.bincount(e.symbols, minlength=len(uniq))
    refined = QuantizedState(entries, new_groups, config=state.config, info=dict(state.info))
    with torch.no_grad():
        rw = {k: torch.from_numpy(v) for k, v in refined.dequantize().items() if k in names}
        for e in refined.entries:
            if e.kind == "alias":
                rw[e.name] = rw[e.target]  # tied names must get the very same tensor
        after = float(loss_of(eval_batch, rw))
    k = max(1, min(10, steps // 2))
    info = {
        "method": "learnable float32 centroids (Adam), rounded to float16 after; assignments "
        + ("by straight-through estimation on latent weights" if ste else "fixed"),
        "ste": ste,
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "length": length,
        "seed": seed,
        "random_stream": describe(seed, QAT_WINDOWS),
        "train_loss_first": float(np.mean(losses[:k])),
        "train_loss_last": float(np.mean(losses[-k:])),
        "eval_batch_loss_before_nats": before,
        "eval_batch_loss_after_nats": after,
    }
    return refined, info
