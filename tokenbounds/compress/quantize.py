"""Quantize named tensors to codebooks of L levels: the hypothesis a quantized message describes (docs/compression.md,
"2. Quantized models").

A `QuantizedState` is the exact content of a message (`message.encode`): for every tensor its name, shape and output
dtype, and how its values are described:

- "quantized": a symbol per entry, an index into a codebook (a `Group`: sorted, distinct float16 centroids and the
  count of every symbol, its empirical frequency table). The entry's value is the centroid, in float32.
- "raw": the values stored as they are in a storage dtype (float16 by default for floating tensors left
  unquantized, or float32; integer / bool tensors in their own dtype). Every raw byte is in the message.
- "alias": a tensor tied to an earlier one (e.g. lm_head.weight tied to the token embedding): encoded once, and
  decoded as a copy of its target. Costs a name and an index, no values.

Default choice (`default_select`): every floating tensor with 2 or more dimensions (the weight matrices) is
quantized; 1-D tensors (norm gains, biases) are kept raw in float16 and paid for. `dequantize()` gives the weights
the message describes, floating tensors in float32: that model, not the original, is the one to bound.

Codebooks: one per quantized tensor by default (tensors differ in scale), or one shared by all (`shared=True`).
- uniform: L bins of equal width over [min, max]; centroids at the bin centres.
- k-means: 1-D Lloyd iterations from quantile initialisation, fitted on at most `KMEANS_FIT` values drawn with a
  fixed seed (any centroids give a valid message: the fit only affects quality). Needs at least L distinct values.
Then the centroids are rounded to float16, duplicates dropped (so a codebook holds <= L values), and every entry is
assigned to its nearest float16 centroid (ties to the lower one).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tokenbounds.errors import UserError

KMEANS_FIT = 1 << 22  # values used to fit k-means centroids per codebook
KMEANS_ITERS = 300
F16_MAX = float(np.finfo(np.float16).max)

# Dtype codes in the message (one byte). Floating tensors decode to float32.
DTYPES = ["float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"]
RAW_FLOAT_DTYPES = ("float16", "float32")


@dataclass
class Group:
    """A codebook and its frequency table: centroids[k] is the value of symbol k, counts[k] how often it occurs."""

    centroids: np.ndarray  # float16, sorted ascending, distinct
    counts: np.ndarray  # int64, one per centroid, summing to the number of entries coded with this codebook

    @property
    def levels(self) -> int:
        return len(self.centroids)


@dataclass
class Entry:
    """One named tensor of a quantized state."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # output dtype after decoding (float32 for every floating tensor)
    kind: str  # "quantized" | "raw" | "alias"
    group: int | None = None  # quantized: index into QuantizedState.groups
    symbols: np.ndarray | None = None  # quantized: int32 codebook indices, flat, len = prod(shape)
    storage: str | None = None  # raw: dtype of the stored bytes
    data: np.ndarray | None = None  # raw: the stored values (dtype = storage), flat
    target: str | None = None  # alias: name of the earlier tensor it equals

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class QuantizedState:
    """Everything a message holds; `dequantize()` is the model it describes."""

    entries: list[Entry]
    groups: list[Group]
    config: bytes = b""  # the architecture config (config.json bytes), part of the description
    info: dict = field(default_factory=dict)  # how it was made (levels, kmeans ...): not in the message

    def dequantize(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for e in self.entries:
            if e.kind == "quantized":
                values = self.groups[e.group].centroids.astype(np.float32)[e.symbols]
            elif e.kind == "raw":
                values = e.data.astype(e.dtype)
            else:
                values = out[e.target].reshape(-1).copy()
            out[e.name] = values.reshape(e.shape)
        return out

    @property
    def n_parameters(self) -> int:
        """Scalars described, tied tensors counted once."""
        return sum(e.size for e in self.entries if e.kind != "alias")

    @property
    def n_quantized(self) -> int:
        return sum(e.size for e in self.entries if e.kind == "quantized")


def is_floating(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.floating)


def default_select(name: str, array: np.ndarray) -> bool:
    """Quantize every floating tensor with >= 2 dimensions; keep 1-D tensors (norms, biases) raw."""
    return is_floating(array) and array.ndim >= 2


def regex_select(pattern: str) -> Callable[[str, np.ndarray], bool]:
    """Quantize the floating tensors whose name matches `pattern` (re.search)."""
    try:
        rx = re.compile(pattern)
    except re.error as err:
        raise UserError(f"bad --tensors pattern {pattern!r}: {err}") from None
    return lambda name, array: is_floating(array) and rx.search(name) is not None


def uniform_centroids(values: np.ndarray, levels: int) -> np.ndarray:
    """Centres of `levels` equal-width bins over [min, max], as float64."""
    lo, hi = float(values.min()), float(values.max())
    width = (hi - lo) / levels
    return lo + width * (np.arange(levels) + 0.5)


def kmeans_centroids(values: np.ndarray, levels: int, seed: int = 0) -> np.ndarray:
    """1-D k-means (Lloyd) centroids as float64. UserError when the values hold fewer than `levels` distinct ones.

    The values are sorted once; each Lloyd step then finds the cluster boundaries with `levels` binary searches and
    the cluster means from a cumulative sum, so an iteration costs O(levels log n), not O(n).
    """
    x = values.reshape(-1)
    probe = np.unique(x[: 1 << 20])
    if len(probe) < levels:
        n_distinct = len(probe) if x.size <= 1 << 20 else len(np.unique(x))
        if n_distinct < levels:
            raise UserError(f"k-means with {levels} levels needs at least {levels} distinct values; got {n_distinct}")
    if x.size > KMEANS_FIT:
        x = np.random.default_rng(seed).choice(x, size=KMEANS_FIT, replace=False)
    x = np.sort(x.astype(np.float64))
    cs = np.concatenate([[0.0], np.cumsum(x)])
    c = np.unique(np.quantile(x, (np.arange(levels) + 0.5) / levels))
    if len(c) < levels:  # many repeated values: start from distinct values spread over the sorted data instead
        u = np.unique(x)
        c = u[np.linspace(0, len(u) - 1, levels).round().astype(np.int64)]
    for _ in range(KMEANS_ITERS):
        # cluster k holds x[b[k]:b[k+1]]: the values nearest to c[k] (ties to the lower centroid, as `assign`)
        b = np.concatenate([[0], np.searchsorted(x, (c[:-1] + c[1:]) / 2, side="right"), [len(x)]])
        n = np.diff(b)
        new = np.where(n > 0, (cs[b[1:]] - cs[b[:-1]]) / np.maximum(n, 1), c)
        new.sort()
        if np.array_equal(new, c):
            break
        c = new
    return c


def to_codebook(centroids: np.ndarray, what: str) -> np.ndarray:
    """float64 centroids -> sorted distinct float16 codebook. UserError when a centroid overflows float16."""
    if not np.all(np.abs(centroids) <= F16_MAX):
        raise UserError(f"{what}: values beyond float16's range ({F16_MAX:g}) cannot use a float16 codebook")
    return np.unique(centroids.astype(np.float16))


def assign(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest codebook entry for every value (ties to the lower entry), int32, flat."""
    c = codebook.astype(np.float64)
    mids = (c[:-1] + c[1:]) / 2
    return np.searchsorted(mids, values.reshape(-1).astype(np.float64), side="left").astype(np.int32)


def quantize_tensors(
    tensors: dict[str, np.ndarray],
    levels: int,
    kmeans: bool = False,
    select: Callable[[str, np.ndarray], bool] | str | None = None,
    shared: bool = False,
    raw_dtype: str = "float16",
    ties: dict[str, str] | None = None,
    config: bytes = b"",
) -> QuantizedState:
    """Quantize `tensors` (name -> numpy array, in message order) to codebooks of at most `levels` float16 values.

    select: None (weight matrices, `default_select`), a regex on names, or a predicate (name, array) -> bool.
    shared: one codebook for all quantized tensors instead of one per tensor. raw_dtype: storage of floating tensors
    left unquantized ("float16" or "float32"). ties: alias name -> target name for tied tensors (the alias is encoded
    as a reference; its array, if given, must equal the target's). config: architecture config bytes to carry.
    UserError on levels < 2, non-finite values, k-means with too few distinct values, an empty selection.
    """
    if not isinstance(levels, (int, np.integer)) or levels < 2:
        raise UserError(f"levels must be an integer >= 2, got {levels}")
    if raw_dtype not in RAW_FLOAT_DTYPES:
        raise UserError(f"unquantized dtype must be one of {', '.join(RAW_FLOAT_DTYPES)}, got {raw_dtype}")
    if not tensors:
        raise UserError("no tensors to quantize")
    ties = dict(ties or {})
    if select is None:
        select = default_select
    elif isinstance(select, str):
        select = regex_select(select)

    names = list(tensors)
    for alias, target in ties.items():
        if alias not in tensors or target not in tensors or alias == target:
            raise UserError(f"tie {alias} -> {target}: both must be distinct tensors of the model")
        if names.index(target) > names.index(alias) or target in ties:
            raise UserError(f"tied tensor {alias} must come after its target {target}, which must not be tied itself")
    chosen: list[str] = []
    entries: list[Entry] = []
    for name in names:
        a = np.asarray(tensors[name])
        if str(a.dtype) not in DTYPES:
            raise UserError(f"tensor {name} has unsupported dtype {a.dtype}")
        out_dtype = "float32" if is_floating(a) else str(a.dtype)
        if is_floating(a) and not np.all(np.isfinite(a)):
            raise UserError(f"tensor {name} holds NaN or infinite values")
        if name in ties:
            target = np.asarray(tensors[ties[name]])
            if a.shape != target.shape or not np.array_equal(a, target):
                raise UserError(f"tied tensor {name} differs from its target {ties[name]}")
            entries.append(Entry(name, tuple(a.shape), out_dtype, "alias", target=ties[name]))
        elif select(name, a):
            chosen.append(name)
            entries.append(Entry(name, tuple(a.shape), out_dtype, "quantized"))
        elif is_floating(a):
            stored = a.astype(raw_dtype).reshape(-1)
            if not np.all(np.isfinite(stored)):
                raise UserError(f"tensor {name} overflows {raw_dtype}; keep it as float32 (--unquantized-dtype)")
            entries.append(Entry(name, tuple(a.shape), out_dtype, "raw", storage=raw_dtype, data=stored))
        else:
            entries.append(Entry(name, tuple(a.shape), out_dtype, "raw", storage=str(a.dtype), data=a.reshape(-1)))
    if not chosen:
        raise UserError("no tensor selected for quantization (check --tensors)")

    by_name = {e.name: e for e in entries}
    fit = kmeans_centroids if kmeans else uniform_centroids
    groups: list[Group] = []
    batches = [chosen] if shared else [[n] for n in chosen]
    for batch in batches:
        what = "all selected tensors" if shared else batch[0]
        values = np.concatenate([np.asarray(tensors[n], dtype=np.float32).reshape(-1) for n in batch])
        if values.size == 0:
            raise UserError(f"tensor {what} is empty")
        if kmeans:
            try:
                centroids = fit(values, levels)
            except UserError as err:
                raise UserError(f"{what}: {err}") from None
        else:
            centroids = fit(values, levels)
        codebook = to_codebook(centroids, what)
        counts = np.zeros(len(codebook), dtype=np.int64)
        for n in batch:
            e = by_name[n]
            e.symbols = assign(np.asarray(tensors[n]), codebook)
            e.group = len(groups)
            counts += np.bincount(e.symbols, minlength=len(codebook))
        groups.append(Group(codebook, counts))
    info = {"levels": int(levels), "kmeans": bool(kmeans), "shared_codebook": bool(shared), "raw_dtype": raw_dtype}
    return QuantizedState(entries, groups, config=config, info=info)
