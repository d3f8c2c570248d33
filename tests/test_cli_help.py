"""Every verb's --help: answers without importing torch, shows real defaults and every choice, no Python reprs."""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tokenbounds.cli import COMMANDS, build_parser

ROOT = Path(__file__).parents[1]
VERBS = [[name] for name in COMMANDS] + [["study", "compression"], ["study", "markov"]]


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)


def subparsers(parser: argparse.ArgumentParser) -> dict:
    return next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def verb_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in argv:
        parser = subparsers(parser)[name]
    return parser


def test_building_the_parser_imports_no_torch():
    done = python(
        "import sys\nfrom tokenbounds.cli import build_parser\nbuild_parser()\nassert 'torch' not in sys.modules"
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("argv", VERBS, ids=" ".join)
def test_help_exits_0_without_importing_torch(argv):
    done = subprocess.run([sys.executable, "-m", "tokenbounds", *argv, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: tokenbounds" in done.stdout, done.stderr
    code = (
        "import sys\nfrom tokenbounds.cli import build_parser\n"
        f"try:\n    build_parser().parse_args({[*argv, '--help']!r})\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    done = python(code)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("argv", VERBS, ids=" ".join)
def test_help_shows_real_defaults_and_every_choice(argv):
    parser = verb_parser(argv)
    text = parser.format_help()
    assert "(default: None)" not in text
    assert not re.search(r"\((-?\d+(\.\d+)?(e-?\d+)?|'[^']*'), ", text), "a Python tuple repr"
    assert "{'" not in text and "['" not in text, "a Python dict or list repr"
    for action in parser._actions:
        if action.help in (None, argparse.SUPPRESS) or isinstance(action, argparse._SubParsersAction):
            continue
        shown = parser._get_formatter()._expand_help(action)
        assert shown.count("(default:") <= 1, f"{action.option_strings}: {shown}"
        takes_value = action.option_strings and action.nargs != 0 and not action.required
        assert not takes_value or "(default: " in shown, f"{action.option_strings} does not say its default"
        for choice in action.choices or ():
            assert str(choice) in shown, f"{action.option_strings} does not list {choice}"
