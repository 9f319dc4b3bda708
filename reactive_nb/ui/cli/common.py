"""What every ``reactive-nb`` subcommand shares: one-line errors, printing, and the check
of a database URL made before connecting."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from reactive_nb.errors import one_line

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

PROG = "reactive-nb"


class CliError(Exception):
    """A problem to report on one line, with exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see {self.prog} --help)")


Subcommands: TypeAlias = "argparse._SubParsersAction[Parser]"
"""Where each subcommand module adds its parsers."""


def clock() -> str:
    """The wall-clock time to the millisecond, prefixed to each live line."""
    return datetime.now().strftime("%H:%M:%S.%f")[:-3]


def say(*parts: Any, file: Any = None) -> None:
    """Print and flush at once: the output is read live, often through a pipe."""
    print(*parts, file=file or sys.stdout, flush=True)


def database_url(url: str) -> URL:
    """The parsed database URL; a SQLite file that does not exist is refused (connecting
    would create an empty one)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CliError(f"bad database URL: {one_line(exc)}") from None
    database = parsed.database
    if (parsed.get_backend_name() == "sqlite" and database and database != ":memory:"
            and not database.startswith("file:") and "uri" not in parsed.query
            and not Path(database).exists()):
        raise CliError(f"no SQLite database at {database}")
    return parsed
