"""Which tenants exist and where their data lives, as the main database says.

The main database is the source of truth: ``database=`` is a query returning a tenant's
database name (NULL: the tenant lives on the shared main database; no row: there is no
such tenant), ``list=`` lists the tenants. Answers are remembered until a table those
queries read changes (the ``Tenancy`` calls ``invalidate`` from its bus subscription), so
a tenant check on the hot path is a dict lookup. A tenant id is never used as a database
name: only a name the lookup returned is, and only once it is a plain identifier.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from reactive_nb.errors import ConfigError, TenantNotFound
from reactive_nb.events import DEFAULT_TENANT
from reactive_nb.model.tenants import as_tenant

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy import Engine, Row

#: What a database name from the lookup must look like before it goes into a URL: a plain
#: SQL identifier (PostgreSQL truncates names at 63 bytes).
DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

#: Execution option of reactive_nb's own statements: local capture and dependency
#: inference skip them (``reactive_nb.capture.sqlalchemy.INTERNAL``).
INTERNAL = {"reactive_nb_internal": True}


def plain_database_name(tenant: str, name: str) -> str:
    """``name`` if it is a plain identifier; ConfigError otherwise (it is never quoted
    into a URL: a lookup returning ``x/../y`` or ``a?host=evil`` is refused)."""
    if not DATABASE_NAME.fullmatch(name):
        raise ConfigError(f"tenant {tenant!r}: the database name {name!r} returned by the "
                          "lookup is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return name


def derive_list(database_sql: str, dialect: str | None) -> str:
    """The query listing every tenant, derived from the lookup of one: the column compared
    with ``:tenant`` becomes the selected column, that comparison is dropped, other
    conditions stay. ``SELECT database_name FROM organization WHERE id = :tenant`` gives
    ``SELECT id AS tenant FROM organization ORDER BY id``."""
    import sqlglot
    from sqlglot import exp

    problem = (f"cannot derive the list of tenants from {database_sql!r}: pass list= "
               "(a query whose first column is the tenant)")
    try:
        tree = sqlglot.parse_one(database_sql, read=dialect)
    except sqlglot.errors.ParseError:
        raise ConfigError(problem) from None
    if not isinstance(tree, exp.Select):
        raise ConfigError(problem)
    for placeholder in tree.find_all(exp.Placeholder):
        comparison = placeholder.parent
        if placeholder.name != "tenant" or not isinstance(comparison, exp.EQ):
            continue
        column = comparison.left if comparison.right is placeholder else comparison.right
        if not isinstance(column, exp.Column):
            continue
        column = column.copy()
        if isinstance(comparison.parent, exp.Where):
            tree.set("where", None)
        else:
            comparison.replace(exp.true())
        tree.set("expressions", [exp.alias_(column.copy(), "tenant")])
        return str(tree.order_by(column).sql(dialect=dialect))
    raise ConfigError(problem)


class Resolver:
    """Answers "does this tenant exist, and which database holds it" from the main database.

    ``_lock`` guards ``_found``, ``_names`` and ``_generation``; it is never held while a
    query runs. A lookup that started before an ``invalidate`` does not store its answer
    (the generation moved), so a tenant deleted meanwhile is not remembered as present.
    """

    def __init__(self, engine: Engine, *, database: str | None, list_sql: str | None,
                 dialect: str | None) -> None:
        self._engine = engine.execution_options(**INTERNAL)
        self.database_sql = database
        self.list_sql = list_sql if list_sql is not None else (
            derive_list(database, dialect) if database is not None else None)
        self._lock = threading.Lock()
        self._found: dict[str, str | None] = {}
        self._names: list[str] | None = None
        self._generation = 0

    def tables(self, dialect: str | None) -> frozenset[str]:
        """Tables the lookup and list queries read (their change re-checks the tenants)."""
        from reactive_nb.model.sql import analyze

        reads: set[str] = set()
        for sql in (self.database_sql, self.list_sql):
            if sql is not None:
                reads |= analyze(sql, dialect).reads
        return frozenset(reads)

    def lookup(self, tenant: str) -> str | None:
        """The tenant's own database name, or None when it lives on the shared database.
        Raises TenantNotFound (with the closest names) when the main database has no row."""
        with self._lock:
            if tenant in self._found:
                return self._found[tenant]
            generation = self._generation
        database: str | None = None
        if self.database_sql is not None:
            rows = self._rows(self.database_sql, {"tenant": tenant})
            if not rows:
                raise TenantNotFound(tenant, self.names())
            value = rows[0][0]
            database = None if value is None or str(value) == "" else str(value)
        elif self.list_sql is not None and tenant not in self.names():
            raise TenantNotFound(tenant, self.names())
        with self._lock:
            if generation == self._generation:
                self._found[tenant] = database
        return database

    def names(self) -> list[str]:
        """Every tenant the list query returns (first column), remembered until the
        tables it reads change; [] without a list query."""
        with self._lock:
            if self._names is not None:
                return self._names
            generation = self._generation
        names = ([str(row[0]) for row in self._rows(self.list_sql, {})]
                 if self.list_sql is not None else [])
        with self._lock:
            if generation == self._generation:
                self._names = names
        return names

    def frame(self) -> pd.DataFrame:
        """The list query's result as a DataFrame (every column it selects)."""
        import pandas as pd
        from sqlalchemy import text

        if self.list_sql is None:
            empty: pd.DataFrame = pd.DataFrame({"tenant": pd.Series([], dtype=object)})
            return empty
        with as_tenant(DEFAULT_TENANT), self._engine.connect() as conn:
            frame: pd.DataFrame = pd.read_sql_query(text(self.list_sql), conn)
        return frame

    def known(self) -> dict[str, str | None]:
        """The tenants resolved so far and their database (None: shared)."""
        with self._lock:
            return dict(self._found)

    def invalidate(self) -> None:
        """A table the queries read changed: forget every answer."""
        with self._lock:
            self._generation += 1
            self._found.clear()
            self._names = None

    def _rows(self, sql: str, params: Mapping[str, Any]) -> Sequence[Row[Any]]:
        from sqlalchemy import text

        # As the unscoped tenant: these are the directory's own reads of the main
        # database, not a tenant's (no RLS setting, not captured under a tenant).
        with as_tenant(DEFAULT_TENANT), self._engine.connect() as conn:
            return conn.execute(text(sql), dict(params)).all()
