"""Reading and writing SQL through a ReactiveDB: bound parameters, pandas frames, the
current tenant's engine. Writes made here are captured like any other.

``ReactiveDB`` inherits these; they live apart so the composition root stays small.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from reactive_nb.model.tenants import TenantRegistry, as_tenant, current_tenant

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

#: Keywords of ``read_sql`` that are pandas options, not SQL parameters (pass a parameter
#: of the same name through ``params=``).
PANDAS_OPTIONS = frozenset({"index_col", "coerce_float", "parse_dates", "columns",
                            "chunksize", "dtype_backend", "dtype"})


def open_engine(url_or_engine: str | Engine) -> tuple[Engine, bool]:
    """The engine of ``connect(url_or_engine)`` and whether it is ours to dispose of."""
    from sqlalchemy import Engine, create_engine, event
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import SingletonThreadPool

    if isinstance(url_or_engine, Engine):
        return url_or_engine, False
    url = make_url(url_or_engine)
    if not (url.get_backend_name() == "sqlite" and url.get_driver_name() == "pysqlite"
            and url.database in (None, "", ":memory:")):
        return create_engine(url), True
    # An in-memory database lives in its connection, and SQLAlchemy's default pool gives
    # each thread its own, empty one. Every thread gets the same connection instead (a
    # thread reuses its checkout when it nests, as before), and one thread holds it at a
    # time: sharing a connection must not share transactions, or a thread would read
    # another's uncommitted rows and roll them back when it returns the connection.
    # pool_size: the pool closes the connections of threads past that number, which would
    # close the database.
    import sqlite3

    shared = sqlite3.connect(":memory:", check_same_thread=False)
    engine = create_engine(url, poolclass=SingletonThreadPool, creator=lambda: shared,
                           pool_size=2**30)
    turn = threading.RLock()  # held from the outermost checkout to its check-in
    event.listen(engine, "checkout", lambda *_: turn.acquire())
    event.listen(engine, "checkin", lambda *_: turn.release())
    return engine, True


class SqlAccess:
    """``read_sql``, ``execute``, ``session`` and ``tenant`` over ``engine``."""

    engine: Engine
    tenants: TenantRegistry

    def _check_open(self) -> None:
        raise NotImplementedError

    def read_sql(self, sql: Any, params: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> pd.DataFrame:
        """Run a query with bound parameters (``:name``) and return a DataFrame.

        Keywords are parameters (``db.read_sql("... = :org", org="acme")``), except
        pandas' own options (``parse_dates``, ``index_col``, ``dtype_backend``, ``dtype``,
        ``coerce_float``), which go to ``pandas.read_sql_query``; ``columns`` keeps those
        columns of the result. ``read_sql_query``, not ``read_sql``: the latter first asks
        the database's catalog whether the SQL text is a table name, a second query per read.
        """
        from sqlalchemy import text

        from reactive_nb._frames import pandas

        pandas_module = pandas()
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in PANDAS_OPTIONS}
        columns = options.pop("columns", None)
        statement = text(sql) if isinstance(sql, str) else sql
        with self._current_engine().connect() as conn:
            try:
                frame: pd.DataFrame = pandas_module.read_sql_query(
                    statement, conn, params={**(params or {}), **kwargs}, **options)
            except pandas_module.errors.DatabaseError as exc:
                # pandas wraps the driver's error in a message that repeats the whole SQL;
                # the database's own error says what is wrong.
                if exc.__cause__ is not None:
                    raise exc.__cause__ from None
                raise
        return frame if columns is None else frame[list(columns)]

    def execute(self, sql: Any,
                params: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
                **kwargs: Any) -> int:
        """Run a write in its own transaction and commit it; returns the affected row count.

        ``params`` may be a list of dicts for an executemany.
        """
        from sqlalchemy import text

        statement = text(sql) if isinstance(sql, str) else sql
        bound: Any = params if params is not None and not isinstance(params, Mapping) else {
            **(params or {}), **kwargs}
        with self._current_engine().begin() as conn:
            return int(conn.execute(statement, list(bound) if isinstance(bound, list | tuple)
                                    else bound).rowcount)

    def session(self, **kwargs: Any) -> Session:
        """An ORM session on this database; its commits are captured like any other write."""
        from sqlalchemy.orm import Session

        return Session(self._current_engine(), **kwargs)

    def _current_engine(self) -> Engine:
        self._check_open()
        return self.tenants.engine(current_tenant()) or self.engine

    @contextlib.contextmanager
    def tenant(self, tenant: str) -> Iterator[str]:
        """Run the block as ``tenant``: its cache entries, versions and changes."""
        with as_tenant(self.tenants.check(tenant)):
            yield tenant
