"""Command line: argument parsing and clear errors only; the work happens in tokenbounds.pipeline and below.

Each sub-command is one module here with `add_parser(subparsers)` and `run(args) -> int`, and one config dataclass
(in a module that imports no torch) whose fields are its flags (tokenbounds.config.add_flags) and whose values the
run records; `run` turns the namespace into that config (parse_config) and only then imports the heavy work, so
`--help` answers without loading torch.
"""

import argparse
import importlib
import sys

from tokenbounds.errors import UserError

# Modules under tokenbounds.cli, in the order --help lists them.
COMMANDS = ["quickstart", "prepare", "train", "quantize", "size", "bound", "study", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenbounds",
        description="Token-level generalization bounds for language models: how well is this model "
        "guaranteed to predict the next token of text from the process its training data came from?",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"tokenbounds.cli.{name}")
        module.add_parser(sub).set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"tokenbounds {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tokenbounds {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
