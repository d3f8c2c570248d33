"""Each flag is declared once: a config dataclass's fields generate the command-line parser, and its values are the
run's record in the report.

    @dataclass
    class BoundConfig:
        model: str = flag(help="a model path", metavar="PATH")                     # required: no default
        samples: int = flag(10_000, help="sampled units", metavar="S")
        rule: str | None = flag(None, help="context rule", choices=RULES, default_text="block for block mode")
        alphas: tuple[float, ...] = flag((1e-4, 0.01), help="smoothing weights")  # parsed as A1,A2,...
        progress: bool = flag(True, help="hide the progress bar", name="--no-progress")

`add_flags(parser, BoundConfig)` adds `--model`, `--samples`, ... (underscores become dashes) with their types,
choices and a help line that ends in the real default; `parse_config(BoundConfig, namespace)` returns the config and
the set of fields the user actually gave (every flag defaults to argparse.SUPPRESS, so a value in the namespace was
typed on the command line: what `train --resume` needs to tell "not given" from "given the default").

Only the standard library is imported here, so `--help` answers before torch is loaded.
"""

import argparse
import types
import typing
from dataclasses import MISSING, field, fields


def flag(
    default=MISSING,
    *,
    help: str,
    choices=None,
    metavar: str | None = None,
    name: str | None = None,
    group: str | None = None,
    default_text: str | None = None,
    cli: bool = True,
):
    """A dataclass field that is also the flag `--field-name` (or `name`; a boolean named `--no-X` stores False).

    `default_text` replaces the printed default where the value is computed later (a None default); `cli=False`
    keeps a field in the record without a flag.
    """
    meta = {"help": help, "choices": choices, "metavar": metavar, "name": name, "group": group}
    meta.update(default_text=default_text, cli=cli)
    if isinstance(default, list | dict | set):
        raise TypeError("use a tuple (immutable) as a flag's default")
    return field(default=default, metadata=meta)


def _unwrap_optional(tp):
    """`X | None` -> X; anything else unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _list_parser(item_type):
    def parse(text: str) -> tuple:
        try:
            return tuple(item_type(x.strip()) for x in text.split(",") if x.strip())
        except ValueError:
            kind = {int: "integers", float: "numbers"}.get(item_type, "values")
            raise argparse.ArgumentTypeError(f"not a comma-separated list of {kind}: {text!r}") from None

    return parse


def show_default(value) -> str:
    """A default as a user would type it: tuples as comma lists, no Python reprs."""
    if isinstance(value, tuple):
        return ",".join(show_default(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:_}".replace("_", ",")
    return str(value)


def add_flags(parser: argparse.ArgumentParser, cls) -> argparse.ArgumentParser:
    """Add one flag per field of the dataclass `cls` (fields with cli=False are skipped)."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(cls):
        meta = f.metadata
        if not meta.get("cli", False):
            continue
        target = parser
        if meta["group"]:
            target = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        kind = _unwrap_optional(hints[f.name])
        option = meta["name"] or "--" + f.name.replace("_", "-")
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS, "help": meta["help"]}
        required = f.default is MISSING and f.default_factory is MISSING
        if kind is bool:
            kwargs["action"] = "store_false" if option.startswith("--no-") else "store_true"
        else:
            if typing.get_origin(kind) is tuple:
                item = typing.get_args(kind)[0]
                kwargs["type"] = _list_parser(item)
                kwargs["metavar"] = meta["metavar"] or ("X1,X2,..." if item is not str else "A,B,...")
            else:
                kwargs["type"] = kind
                kwargs["metavar"] = meta["metavar"]
            if meta["choices"] is not None:
                kwargs["choices"] = tuple(meta["choices"])  # argparse lists them: {a,b,c}
                kwargs.pop("metavar")
            if required:
                kwargs["required"] = True
            elif meta["default_text"] is not None:
                kwargs["help"] += f" (default: {meta['default_text']})"
            elif f.default is not None:
                kwargs["help"] += f" (default: {show_default(f.default)})"
        target.add_argument(option, **kwargs)
    return parser


def parse_config(cls, namespace: argparse.Namespace):
    """(cls(**given values), names of the fields the user gave) from a namespace parsed with `add_flags`."""
    given = {f.name: getattr(namespace, f.name) for f in fields(cls) if hasattr(namespace, f.name)}
    return cls(**given), set(given)
