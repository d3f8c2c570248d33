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
choices and a help line that ends in the real default; `flag(..., positional=True)` is an argument (a tuple field
takes one or more); a field made by `section(Cls)` holds a dataclass whose flags are added in place, under their own
names, so a verb's config can contain a part's config (train: the trainer's TrainConfig) without repeating it;
`parse_config(BoundConfig, namespace)` returns the config and the set of fields the user actually gave (every flag
defaults to argparse.SUPPRESS, so a value in the namespace was typed on the command line: what `train --resume`
needs to tell "not given" from "given the default").

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
    positional: bool = False,
):
    """A dataclass field that is also the flag `--field-name` (or `name`; a boolean named `--no-X` stores False).

    `default_text` replaces the printed default where the value is computed later (a None default); `cli=False`
    keeps a field in the record without a flag; `positional` makes it an argument named by `metavar`.
    """
    meta = {"help": help, "choices": choices, "metavar": metavar, "name": name, "group": group}
    meta.update(default_text=default_text, cli=cli, positional=positional)
    if isinstance(default, list | dict | set):
        raise TypeError("use a tuple (immutable) as a flag's default")
    return field(default=default, metadata=meta)


def section(cls):
    """A field holding the dataclass `cls` (default: cls()), whose own flags `add_flags` adds in place."""
    return field(default_factory=cls, metadata={"section": cls})


def _unwrap_optional(tp):
    """`X | None` -> X; anything else unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _list_parser(item_type, choices=None):
    def parse(text: str) -> tuple:
        try:
            items = tuple(item_type(x.strip()) for x in text.split(",") if x.strip())
        except ValueError:
            kind = {int: "integers", float: "numbers"}.get(item_type, "values")
            raise argparse.ArgumentTypeError(f"not a comma-separated list of {kind}: {text!r}") from None
        unknown = [x for x in items if choices is not None and x not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"{', '.join(map(str, unknown))} not of {', '.join(map(str, choices))}")
        return items

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


def _cli_fields(cls):
    """(field, type) of every flag of `cls`, sections expanded in place."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if "section" in f.metadata:
            yield from _cli_fields(f.metadata["section"])
        elif f.metadata.get("cli", False):
            yield f, _unwrap_optional(hints[f.name])


def add_flags(parser: argparse.ArgumentParser, cls) -> argparse.ArgumentParser:
    """Add one flag per field of the dataclass `cls` (fields with cli=False are skipped)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    seen: set[str] = set()
    for f, kind in _cli_fields(cls):
        if f.name in seen:  # parse_config could not tell whose value it is
            raise TypeError(f"{cls.__name__}: two flags store {f.name!r}")
        seen.add(f.name)
        meta = f.metadata
        target = parser
        if meta["group"]:
            target = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        option = meta["name"] or "--" + f.name.replace("_", "-")
        kwargs = {"dest": f.name, "default": argparse.SUPPRESS, "help": meta["help"]}
        required = f.default is MISSING and f.default_factory is MISSING
        choices = None if meta["choices"] is None else tuple(meta["choices"])
        if kind is bool:
            kwargs["action"] = "store_false" if option.startswith("--no-") else "store_true"
        else:
            if typing.get_origin(kind) is tuple:
                item = typing.get_args(kind)[0]
                if meta["positional"]:
                    kwargs.update(type=item, nargs="+", metavar=meta["metavar"])
                else:
                    kwargs["type"] = _list_parser(item, choices)
                    kwargs["metavar"] = meta["metavar"] or ("X1,X2,..." if item is not str else "A,B,...")
                    choices = None  # checked item by item: argparse would compare the whole tuple
            else:
                kwargs.update(type=kind, metavar=meta["metavar"])
            if meta["choices"] is not None:  # in the help line too: argparse shows them only beside the flag
                kwargs["help"] += f" ({'|'.join(map(str, meta['choices']))})"
            if choices is not None:
                kwargs["choices"] = choices
                kwargs.pop("metavar")
            if required and not meta["positional"]:
                kwargs["required"] = True
            elif meta["default_text"] is not None:
                kwargs["help"] += f" (default: {meta['default_text']})"
            elif not required and f.default is not None:
                kwargs["help"] += f" (default: {show_default(f.default)})"
        if meta["positional"]:  # argparse takes a positional's dest as its name, and always requires it
            option = kwargs.pop("dest")
            del kwargs["default"]
        target.add_argument(option, **kwargs)
    return parser


def parse_config(cls, namespace: argparse.Namespace):
    """(cls(**given values), names of the fields the user gave) from a namespace parsed with `add_flags`.

    A section's fields are given by their own names: `given` is flat, one set of names for the whole command.
    """
    values, given = {}, set()
    for f in fields(cls):
        if "section" in f.metadata:
            values[f.name], inner = parse_config(f.metadata["section"], namespace)
            given |= inner
        elif hasattr(namespace, f.name):
            value = getattr(namespace, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value  # nargs="+" gives a list
            given.add(f.name)
    return cls(**values), given
