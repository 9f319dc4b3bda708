"""The ``reactive-nb`` command: a demo to watch tables update, and tools for the change feed.

    reactive-nb demo [--headless] [--seconds N] [--db PATH | --url DBURL] [--redis URL]
    reactive-nb notify --redis URL [--url DBURL [--force]] [--tenant T] [--prefix P] TABLE...
    reactive-nb watch --redis URL [--url DBURL] [--tenant T ...] [--prefix P] [--seconds N]
    reactive-nb install-triggers URL [--tables a,b] [--tenant-column col]
    reactive-nb install-triggers TEMPLATE --tenants-from MAIN_URL --database-query SQL
    reactive-nb uninstall-triggers URL

``notify`` is for writers that do not use reactive_nb; it does exactly what these two
Redis commands do (the version first, so a reader that hears the change sees it)::

    HINCRBY P:{T}:versions TABLE 1
    XADD P:{T}:changes MAXLEN ~ 10000 * tables TABLE origin cli

With ``--url DBURL`` the command works as ``rnb.connect(DBURL, redis=URL)`` does: the key
prefix P is ``rnb:<identity>``, derived from the database itself, and ``notify`` names
each table as the library does (``Organization`` and ``public.organization`` are
``organization``) and refuses a table the database does not have, unless ``--force``.
Without ``--url`` the prefix is ``rnb`` (what a ReactiveDB given ``key_prefix="rnb"``
uses) and names are only lower-cased: nothing can check them or resolve a schema.
``--prefix`` overrides the prefix either way.

Every error is one line on stderr and exit status 2.

Each subcommand group is a module (`demo_command`, `feed`, `triggers`) that adds its
parsers and sets ``run``, the function that carries the command out; this module parses
and turns every failure into its one line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from reactive_nb.errors import one_line
from reactive_nb.ui.cli import demo_command, feed, triggers
from reactive_nb.ui.cli.common import PROG, CliError, Parser
from reactive_nb.ui.cli.demo_command import demo_folder

__all__ = ["CliError", "build_parser", "demo_folder", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand, in the order ``--help`` lists them."""
    parser = Parser(prog=PROG, description="reactive_nb: tables that keep themselves current")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    demo_command.add_parser(sub)
    feed.add_parsers(sub)
    triggers.add_parsers(sub)
    return parser


def _version() -> str:
    from reactive_nb import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    parser = build_parser()
    command = "?"
    try:
        args = parser.parse_args(argv)
        command = args.command
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except CliError as exc:
        where = PROG if command == "?" else f"{PROG} {command}"
        print(f"{where}: {exc}", file=sys.stderr, flush=True)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # unforeseen: still one line, with the exception's type
        where = PROG if command == "?" else f"{PROG} {command}"
        print(f"{where}: {one_line(exc, typed=True)}", file=sys.stderr, flush=True)
        return 2
