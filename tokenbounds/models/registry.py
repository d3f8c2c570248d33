"""One place decides what a model path is: the backend registry (lm-evaluation-harness's `@register_model`).

A backend is a `Backend` subclass in one file, registered with `@register_backend("name")`, and one line in
`BACKEND_MODULES` below. It says whether it can open a path (cheap: markers and file names, no weights read), loads it
into a `LogitModel` in a compute dtype on a device, and lists the files that price it (what `bound --checkpoint-size`
and `tokenbounds size` compress). Every backend passes the same conformance test (tests/test_backends.py).

Which backend opens a path: the one specific backend that recognises it by its marker (quantized.json, spec.json,
quip_params, ...); two of them at once is an ambiguous path, refused. Only when none does is a fallback backend
asked (the plain Hugging Face directory or .gguf file, which every marked directory also looks like).
"""

import importlib
import inspect
from abc import ABC, abstractmethod
from pathlib import Path

from tokenbounds.errors import UserError
from tokenbounds.models.base import COMPUTE_DTYPES, LogitModel

# Adding a backend: one file registering it, and its module here.
BACKEND_MODULES = (
    "tokenbounds.models.hf",
    "tokenbounds.models.trained",
    "tokenbounds.models.quantized",
    "tokenbounds.models.quip",
    "tokenbounds.models.markov",
)


class Backend(ABC):
    """A kind of model path. Subclasses set `label` and implement the three methods; `load` may take options."""

    name: str = ""  # set by register_backend
    label: str = ""  # in messages: "a <label>"
    fallback: bool = False  # asked only when no specific backend recognises the path
    compute_dtypes: tuple[str, ...] = tuple(COMPUTE_DTYPES)  # the dtypes it honours (base.py says what they mean)
    dtype_refusal: str = ""  # why the others are refused, for the one-line error
    options: tuple[str, ...] = ()  # keyword options `load` accepts beyond dtype and device

    @abstractmethod
    def can_open(self, path: Path) -> bool:
        """Whether `path` is this backend's, from its name and small marker files only."""

    @abstractmethod
    def load(self, path: Path, compute_dtype: str, device: str, **options) -> LogitModel:
        """The hypothesis at `path`, refusing (UserError) anything that does not load completely."""

    @abstractmethod
    def priced_files(self, path: Path) -> list[Path]:
        """The files whose description length is the model's (what the prior prices), in pricing order."""


BACKENDS: dict[str, Backend] = {}


def register_backend(name: str):
    """Class decorator: check that the class implements `Backend`, then register one instance under `name`."""

    def register(cls):
        if not (inspect.isclass(cls) and issubclass(cls, Backend)):
            raise TypeError(f"backend {name!r}: {cls!r} is not a Backend subclass")
        if inspect.isabstract(cls):
            raise TypeError(f"backend {name!r}: {cls.__name__} does not implement {sorted(cls.__abstractmethods__)}")
        if name in BACKENDS:
            raise TypeError(f"backend {name!r} is registered twice")
        if not cls.label or not set(cls.compute_dtypes) <= set(COMPUTE_DTYPES) or not cls.compute_dtypes:
            raise TypeError(f"backend {name!r} needs a label and compute dtypes among {tuple(COMPUTE_DTYPES)}")
        if set(cls.compute_dtypes) != set(COMPUTE_DTYPES) and not cls.dtype_refusal:
            raise TypeError(f"backend {name!r} refuses some compute dtypes: say why in dtype_refusal")
        cls.name = name
        BACKENDS[name] = cls()
        return cls

    return register


def backends() -> dict[str, Backend]:
    """Every registered backend (importing `BACKEND_MODULES` registers them)."""
    for module in BACKEND_MODULES:
        importlib.import_module(module)
    return BACKENDS


def backend_for(path: str | Path) -> Backend:
    """The one backend that opens `path`; UserError when none or several do."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model path {path} does not exist")
    candidates = [b for b in backends().values() if not b.fallback and b.can_open(path)]
    if not candidates:
        candidates = [b for b in backends().values() if b.fallback and b.can_open(path)]
    if len(candidates) > 1:
        raise UserError(f"{path} is ambiguous: it looks like {' and like '.join(f'a {b.label}' for b in candidates)}")
    if not candidates:
        known = "; ".join(f"a {b.label}" for b in backends().values())
        raise UserError(f"{path} is not a model this tool can open (one of: {known})")
    return candidates[0]


def open_model(path: str | Path, compute_dtype: str = "float32", device: str = "cpu", **options) -> LogitModel:
    """The hypothesis at `path`, ready to score. Options left None are ignored; one the backend lacks is refused."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise UserError(f"unknown compute dtype {compute_dtype!r}; use one of {', '.join(COMPUTE_DTYPES)}")
    path = Path(path)
    backend = backend_for(path)
    given = {key: value for key, value in options.items() if value is not None}
    for key in given:
        if key not in backend.options:
            owners = " or a ".join(b.label for b in backends().values() if key in b.options) or "no model"
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} is for a {owners}, and {path} is not one (it is a {backend.label})")
    if compute_dtype not in backend.compute_dtypes:
        raise UserError(f"{path} is a {backend.label}, which cannot run in {compute_dtype}: {backend.dtype_refusal}")
    return backend.load(path, compute_dtype, device, **given)


def priced_files(path: str | Path) -> list[Path]:
    """What prices the model at `path`, each file checked to exist and hold something."""
    files = backend_for(path).priced_files(Path(path))
    for file in files:
        if not file.is_file():
            raise UserError(f"{file} does not exist or is not a file")
        if file.stat().st_size == 0:
            raise UserError(f"{file} is empty")
    return files
