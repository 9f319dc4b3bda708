"""How ``%reactive`` is told what to do: its help text, and argument parsers whose
mistakes are one-line UsageErrors instead of an exit."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar, cast

from IPython.core import magic as _magic
from IPython.core import magic_arguments as _margs
from IPython.core.error import UsageError

_F = TypeVar("_F", bound=Callable[..., Any])


def line_cell_magic(method: _F) -> _F:
    """IPython's ``line_cell_magic``, typed as the bare method decorator it is here
    (IPython types it as a decorator or a decorator factory)."""
    return cast(_F, _magic.line_cell_magic(method))


def magic_arguments(name: str) -> Callable[[_F], _F]:
    """IPython's ``magic_arguments`` (untyped), typed: builds the parser and the help."""
    return _margs.magic_arguments(name)  # type: ignore[no-untyped-call]


def argument(*args: Any, **kwargs: Any) -> Callable[[_F], _F]:
    """IPython's ``argument`` (untyped), typed."""
    return _margs.argument(*args, **kwargs)  # type: ignore[no-untyped-call]


def parse_argstring(magic: Callable[..., Any], line: str) -> Any:
    """IPython's ``parse_argstring`` (untyped): the arguments of a decorated magic."""
    return _margs.parse_argstring(magic, line)  # type: ignore[no-untyped-call]


USAGE = """\
reactive_nb magics

%reactive connect [URL] [--redis URL] [--relations FILE.yaml|FILE.json]
                  [--min-interval S] [--workers N]
    Connect to a database. URL defaults to $REACTIVE_NB_URL and --redis to
    $REACTIVE_NB_REDIS, so a notebook need not carry credentials. The ReactiveDB is
    bound to the variable `rnb_db` (and returned: `db = %reactive connect`).
    Connecting again closes the previous connection and its live queries.

%%reactive NAME [--deps a,b] [--priority high|normal|low] [--ttl S] [--key COLS]
                [--no-display]
SELECT ... WHERE organization_id = :org
    Define the reactive function NAME from the SQL of the cell and bind its live query
    to the variable NAME. Each :param is read from the variable of the same name and
    sent as a bound parameter. --deps lists the tables it depends on (default: the
    tables it reads); --key names primary-key columns (to highlight changed rows).
    Running the cell again replaces (closes) the previous live query.
    A ':name' inside a string literal, a quoted identifier or a comment is not a
    parameter; a cast may follow one (:id::int). NAME may not be rnb_db, a Python
    keyword or builtin, or one of the cell's parameters.

%reactive status                  a table of the live queries
%reactive tenant NAME | --none    run the notebook as tenant NAME (or unscoped) from now on
%reactive tenants                 the tenants this user may open
%reactive refresh [NAME|--all]    re-run one live query (or all) now
%reactive priorities A B ...      refresh these functions first, in this order
%reactive close                   close every live query and the connection
%reactive --help                  this text

Settings (%config ReactiveMagics.page_size = 100; apply to tables created afterwards):
    ReactiveMagics.page_size   rows per page of the live table (default 50)
    ReactiveMagics.height      height of the live table in pixels (default 0: up to 15 rows)
"""

#: A first word of ``%reactive`` that starts SQL: the SQL belongs in a ``%%reactive`` cell.
SQL_WORDS = frozenset({"select", "with", "insert", "update", "delete", "values", "table",
                       "create", "drop", "alter", "explain", "show", "pragma"})


class LineParser(argparse.ArgumentParser):
    """argparse that reports mistakes as a one-line UsageError instead of exiting."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog=prog, add_help=False, allow_abbrev=False)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see %reactive --help)")


def split(line: str) -> list[str]:
    """The words of a ``%reactive`` line, quoted as in a shell."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%reactive: cannot parse {line!r}: {exc}") from None
