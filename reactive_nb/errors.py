"""Errors a user of reactive_nb can meet.

Every error carries one line that names the problem. The hierarchy::

    ReactiveError
    ├── InputError (ValueError)        bad inputs to a reactive function, every field listed
    ├── RelationError (ValueError)     unknown table in relations, with the closest real one
    ├── TenantNotFound (KeyError)      a tenant that is not registered
    │   └── TenantDatabaseMissing      its database (from the lookup) does not exist
    ├── TenantAccessDenied             a tenant this user may not read (user, tenant)
    ├── CaptureError                   trigger install/uninstall failed (table + DB message)
    ├── ConfigError (ValueError)       a connect() or reactive() option of the wrong shape
    └── ClosedError                    the ReactiveDB or LiveQuery was closed
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ReactiveError(Exception):
    """Base class of every reactive_nb error."""


class InputError(ReactiveError, ValueError):
    """Inputs of a reactive function failed validation; ``problems`` lists each field."""

    def __init__(self, function: str, problems: list[str]) -> None:
        self.function = function
        self.problems = problems
        super().__init__(f"invalid inputs for {function}: " + "; ".join(problems))


class RelationError(ReactiveError, ValueError):
    """A relation or dependency names a table the database does not have."""

    def __init__(self, name: str, known: Iterable[str], where: str = "relations") -> None:
        self.name = name
        self.suggestion = closest(name, known)
        hint = f" (did you mean {self.suggestion!r}?)" if self.suggestion else ""
        super().__init__(f"unknown table {name!r} in {where}{hint}")


class TenantNotFound(ReactiveError, KeyError):
    """The tenant is not registered."""

    def __init__(self, tenant: str, known: Iterable[str] = ()) -> None:
        self.tenant = tenant
        suggestion = closest(tenant, known)
        hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
        super().__init__(f"unknown tenant {tenant!r}{hint}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class TenantDatabaseMissing(TenantNotFound):
    """The main database names a database for the tenant, and that database does not
    exist (PostgreSQL ``3D000``). Nothing is created: a read never makes a database."""

    def __init__(self, tenant: str, database: str) -> None:
        self.database = database
        super().__init__(tenant)
        self.args = (f"tenant {tenant!r}: its database {database!r} does not exist",)


class TenantAccessDenied(ReactiveError, PermissionError):
    """This user may not read the tenant (the ``access=`` query of ``db.tenancy`` found
    no row for them)."""

    def __init__(self, user: str, tenant: str) -> None:
        self.user = user
        self.tenant = tenant
        super().__init__(f"user {user!r} may not access tenant {tenant!r}")


class CaptureError(ReactiveError):
    """Installing or removing change-capture triggers failed."""

    def __init__(self, table: str, message: str) -> None:
        self.table = table
        super().__init__(f"cannot install change capture on {table!r}: {message}")


class ClosedError(ReactiveError, RuntimeError):
    """The object was closed and cannot be used any more."""


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``name`` (case-insensitive), or None."""
    candidates = {k.lower(): k for k in known}
    match = difflib.get_close_matches(name.lower(), list(candidates), n=1, cutoff=0.5)
    return candidates[match[0]] if match else None


def one_line(exc: BaseException, *, typed: bool = False) -> str:
    """An error as one line: the database's own message when a driver error is behind it
    (pandas and SQLAlchemy wrap it), else the first non-empty line of the message.
    ``typed`` prefixes the exception's type name (for status displays and logs)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            exc = orig
            break
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    text = next((" ".join(line.split()) for line in str(exc).splitlines() if line.strip()),
                type(exc).__name__)
    return f"{type(exc).__name__}: {text}"[:500] if typed else text


class ConfigError(ReactiveError, ValueError):
    """An option of ``connect()`` or ``@db.reactive`` has the wrong shape (names the option
    and what it expects)."""
