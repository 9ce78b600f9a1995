"""Argument parsing shared by the command modules: the parser class and helpers.

Kept apart from ``main`` so that the command modules can declare their flags
without importing each other or the dispatcher.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

from skiff.cli import exits


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises :class:`exits.Usage` instead of exiting.

    ``usage_exit`` is the status of a usage error for this command (125 for
    run/create/start, as Docker).
    """

    def __init__(self, *args: Any, usage_exit: int = exits.USAGE, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.usage_exit = usage_exit

    def error(self, message: str) -> NoReturn:
        raise exits.Usage(message, self.usage_exit, prog=self.prog)


Handler = Callable[[Any, argparse.Namespace], int]


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    func: Handler,
    help: str,
    *,
    run_like: bool = False,
    add_help: bool = True,
    usage: str | None = None,
) -> Parser:
    """Declare a command. ``run_like`` commands report engine failures with status 125."""
    parser: Parser = sub.add_parser(
        name,
        prog=f"skiff {name}",
        help=help,
        description=help,
        usage=usage,
        add_help=add_help,
        usage_exit=exits.ENGINE_FAILED if run_like else exits.USAGE,
    )
    if not add_help:  # -h means something else (run's --hostname): keep --help only
        parser.add_argument("--help", action="help", help="show this help message and exit")
    parser.set_defaults(func=func, run_like=run_like, prog=parser.prog, parser=parser)
    return parser


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``, for flags like ``--sig-proxy=false``."""
    value = text.strip().lower()
    if value in {"1", "t", "true"}:
        return True
    if value in {"0", "f", "false"}:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def split_kv(items: list[str] | None, what: str) -> list[tuple[str, str]]:
    """``key=value`` pairs of repeated flags (``--filter``, ``--label``)."""
    pairs = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not key:
            raise exits.Usage(f"invalid {what} {item!r}: expected key=value")
        if what == "filter" and not sep:
            raise exits.Usage(f"bad format of filter (expected name=value): {item}")
        pairs.append((key, value))
    return pairs
