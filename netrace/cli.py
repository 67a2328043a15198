"""The ``netrace`` command: a thin table of subcommands that parse, call and print.

Exit status: 0 on success, 2 on a user error (one message on stderr, no traceback), 1 on an
internal failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from netrace import __version__
from netrace.errors import UserError

__all__ = ["main"]


def _data_inspect(args: argparse.Namespace) -> int:
    from netrace.config import load_config
    from netrace.data import plan_text, prepare, summary_text

    prepared = prepare(load_config(args.config))
    print(summary_text(prepared))
    print()
    print(plan_text(prepared))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a UserError (one line, exit 2) like every other."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see '{self.prog} --help')")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="netrace", description="Race many neural networks on small, noisy data "
                "and keep the ones that generalize.")
    p.add_argument("--version", action="version", version=f"netrace {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    data = sub.add_parser("data", help="look at the data a config describes")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND",
                                   parser_class=_Parser)
    data_sub.required = True
    inspect = data_sub.add_parser("inspect", help="print the data summary and the split plan")
    inspect.add_argument("config", metavar="CONFIG", help="a TOML config file")
    inspect.set_defaults(func=_data_inspect)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        ns = _parser().parse_args(args)
        func: Callable[[argparse.Namespace], int] = ns.func
        return func(ns)
    except UserError as exc:
        print(f"netrace: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("netrace: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
