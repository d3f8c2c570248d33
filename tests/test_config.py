"""Flags generated from a config dataclass: types, choices, real defaults in --help, and which flags were given."""

import argparse
from dataclasses import dataclass

import pytest

from tokenbounds.config import add_flags, flag, parse_config, section


@dataclass
class Example:
    model: str = flag(help="a model path", metavar="PATH")
    samples: int = flag(10_000, help="sampled units", metavar="S")
    delta: float = flag(0.05, help="failure probability")
    rule: str | None = flag(None, help="context rule", choices=("document", "block"), default_text="by mode")
    alphas: tuple[float, ...] = flag((1e-4, 0.01), help="smoothing weights")
    ks: tuple[int, ...] = flag((1, 5), help="top-k")
    force: bool = flag(False, help="overwrite")
    progress: bool = flag(True, help="hide the progress bar", name="--no-progress")
    note: str = flag("x", help="not a flag", cli=False)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="t", exit_on_error=False)
    return add_flags(p, Example)


def test_values_types_and_given():
    ns = parser().parse_args(["--model", "m", "--samples", "7", "--alphas", "0.1,0.2", "--no-progress", "--force"])
    cfg, given = parse_config(Example, ns)
    assert cfg == Example(model="m", samples=7, alphas=(0.1, 0.2), progress=False, force=True)
    assert given == {"model", "samples", "alphas", "progress", "force"}
    cfg, given = parse_config(Example, parser().parse_args(["--model", "m"]))
    assert cfg == Example(model="m") and given == {"model"}
    assert cfg.progress is True and cfg.ks == (1, 5) and cfg.rule is None


def test_help_shows_real_defaults_and_choices():
    text = parser().format_help()
    assert "(default: 10,000)" in text and "(default: 0.05)" in text
    assert "(default: 0.0001,0.01)" in text and "(default: 1,5)" in text
    assert "--rule {document,block}" in text and "(default: by mode)" in text
    assert "None" not in text and "(" + "1, 5)" not in text  # no Python reprs
    assert "--note" not in text


def test_bad_values_are_refused():
    p = argparse.ArgumentParser(prog="t")
    add_flags(p, Example)
    for argv in (["--samples", "many"], ["--alphas", "0.1,x"], ["--rule", "sideways"], []):
        with pytest.raises(SystemExit):
            p.parse_args(["--model", "m", *argv] if argv else argv)


@dataclass(frozen=True, kw_only=True)
class Inner:
    steps: int = flag(100, help="steps", group="optimisation")
    beta: float = flag(0.9, help="not a flag", cli=False)


@dataclass(frozen=True, kw_only=True)
class Outer:
    files: tuple[str, ...] = flag(help="inputs", metavar="FILE", positional=True)
    parts: tuple[str, ...] = flag(("a", "b"), help="parts", choices=("a", "b", "c"))
    inner: Inner = section(Inner)
    out: str = flag(help="output", metavar="DIR")


def test_positionals_sections_and_list_choices():
    p = argparse.ArgumentParser(prog="t")
    add_flags(p, Outer)
    cfg, given = parse_config(Outer, p.parse_args(["x", "y", "--out", "o", "--steps", "3", "--parts", "c,a"]))
    assert cfg == Outer(files=("x", "y"), parts=("c", "a"), inner=Inner(steps=3), out="o")
    assert given == {"files", "parts", "steps", "out"}  # a section's flags are given by their own names
    cfg, given = parse_config(Outer, p.parse_args(["x", "--out", "o"]))
    assert cfg.inner == Inner() and cfg.parts == ("a", "b") and given == {"files", "out"}
    text = p.format_help()
    assert "FILE [FILE ...]" in text and "(a|b|c) (default: a,b)" in text and "optimisation:" in text
    assert "(default: 100)" in text and "--beta" not in text
    for argv in (["x", "--out", "o", "--parts", "a,d"], ["--out", "o"]):
        with pytest.raises(SystemExit):
            p.parse_args(argv)


def test_a_field_stored_by_two_flags_is_refused():
    @dataclass
    class Twice:
        steps: int = flag(1, help="outer steps")
        inner: Inner = section(Inner)

    with pytest.raises(TypeError, match="two flags store 'steps'"):
        add_flags(argparse.ArgumentParser(), Twice)
