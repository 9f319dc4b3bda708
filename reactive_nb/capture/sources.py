"""Wiring of external change sources (database triggers) into a ReactiveDB.

With ``capture="auto"`` a ReactiveDB listens for writes made outside this process on a
database that has reactive_nb triggers (installed by ``db.install_triggers()``, the
``reactive-nb install-triggers`` command, or ``connect(..., install=True)``). Each
notification bumps versions once per (transaction, tenant) even when several processes
share one Redis (the bump carries a ``once_id``), then is published like a local change.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from reactive_nb.events import ALL_TABLES

if TYPE_CHECKING:
    from reactive_nb.capture.external import ExternalChange
    from reactive_nb.db import ReactiveDB

logger = logging.getLogger(__name__)


class Source(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...


class OwnCommits:
    """Transactions this process committed and already published, by PostgreSQL txid.

    The trigger's notification of such a commit would only repeat what the local capture
    published, so it is dropped (for the tables we published; others still count). The
    txid is read on the committing connection just before COMMIT, so it is known before
    the notification can arrive. ``_lock`` guards the dict; it is bounded (oldest dropped).
    """

    LIMIT = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: OrderedDict[str, frozenset[str]] = OrderedDict()

    def before_commit(self, dbapi_connection: Any, tables: frozenset[str]) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT txid_current_if_assigned()::text")
            row = cursor.fetchone()
        finally:
            cursor.close()
        if row and row[0]:
            with self._lock:
                self._tables[str(row[0])] = tables
                while len(self._tables) > self.LIMIT:
                    self._tables.popitem(last=False)

    def remaining(self, change: ExternalChange) -> frozenset[str]:
        """The tables of ``change`` that our own publication did not cover."""
        with self._lock:
            published = self._tables.pop(change.txid, None)
        return change.tables if published is None else change.tables - published


def start_external(db: ReactiveDB, *, install: bool = False) -> Source | None:
    """Start the listener fitting ``db``'s database, if it has (or is given) triggers."""
    dialect = db.engine.dialect.name
    if dialect not in ("postgresql", "sqlite"):
        return None
    if install:
        install_triggers(db, None)
    if not installed(db):
        return None
    source = _make_source(db)
    source.start()
    return source


def _make_source(db: ReactiveDB) -> Source:
    own: OwnCommits | None = None
    if db.engine.dialect.name == "postgresql" and db._capture is not None:
        own = OwnCommits()
        db._capture.before_commit = own.before_commit

    def deliver(change: ExternalChange) -> None:
        if own is not None and not change.lost:
            tables = own.remaining(change)
            if not tables:
                return
            change = dataclasses.replace(change, tables=tables)
        on_external(db, change)

    if db.engine.dialect.name == "postgresql":
        from reactive_nb.capture.postgres import PostgresListener, conninfo_from_url

        return PostgresListener(conninfo_from_url(db.engine.url), deliver)
    from reactive_nb.capture.sqlite import SqlitePoller

    path = db.engine.url.database
    if not path or path == ":memory:":
        raise ValueError("external capture needs a SQLite file, not an in-memory database")
    poller = SqlitePoller(path, deliver)
    if db._capture is not None:
        db._capture.before_commit = functools.partial(_sqlite_counters, poller)
    return poller


def _sqlite_counters(poller: Any, dbapi_connection: Any,
                     tables: frozenset[str]) -> Callable[[], None] | None:
    """Read this transaction's trigger counters before COMMIT; announce them after it.

    SQLite has one writer at a time, so the counters read inside our write transaction are
    exactly those our commit publishes: the poller can skip them, since the local capture
    already published the change. Another writer's later commit moves them further.
    """
    from reactive_nb.capture.sqlite import CHANGES_TABLE

    cursor = dbapi_connection.cursor()
    try:
        rows = cursor.execute(f"SELECT tbl, version FROM {CHANGES_TABLE}").fetchall()
    except Exception:
        return None  # no triggers installed
    finally:
        cursor.close()
    counters = {str(t): int(v) for t, v in rows if str(t) in tables}
    return functools.partial(poller.expect, counters) if counters else None


def _internal(db: ReactiveDB) -> Any:
    """The engine for reactive_nb's own DDL, which local capture does not report."""
    return db.engine.execution_options(reactive_nb_internal=True)


def installed(db: ReactiveDB) -> bool:
    module = _module(db)
    return bool(module.installed_tables(_internal(db)))


def install_triggers(db: ReactiveDB, tables: Any) -> list[str]:
    """Install triggers on ``tables`` (None: every table a reactive function watches)."""
    if tables is None:
        watched: set[str] = set()
        for fn in db.functions.values():
            watched |= fn.watched
        tables = sorted(watched - {ALL_TABLES}) or db.tables
    names = sorted(db.resolve_tables(tables, "install_triggers"))
    module = _module(db)
    if db.engine.dialect.name != "postgresql":
        return list(module.install_triggers(_internal(db), names))
    column = db.tenant_column
    # Tables without the tenant column (lookup tables, say) report "every tenant".
    tagged = [n for n in names if column and column.lower() in db.columns(n)]
    untagged = [n for n in names if n not in tagged]
    result: list[str] = []
    if tagged:
        result += module.install_triggers(_internal(db), tagged, column)
    if untagged:
        result += module.install_triggers(_internal(db), untagged, None)
    return sorted(result)


def uninstall_triggers(db: ReactiveDB) -> None:
    _module(db).uninstall_triggers(_internal(db))


def _module(db: ReactiveDB) -> Any:
    name = db.engine.dialect.name
    if name == "postgresql":
        from reactive_nb.capture import postgres

        return postgres
    if name == "sqlite":
        from reactive_nb.capture import sqlite

        return sqlite
    raise ValueError(f"external change capture is not available for {name} databases")


def on_external(db: ReactiveDB, change: ExternalChange) -> None:
    """Turn a trigger notification into version bumps and published changes."""
    from reactive_nb.events import DEFAULT_TENANT

    tables = frozenset({ALL_TABLES}) if change.lost else change.tables
    targets: set[str] = set()
    for tenant in change.tenants if change.tenants is not None else [DEFAULT_TENANT]:
        targets |= db.affected_tenants(tenant)
    for target in targets:
        once = None if change.lost else f"{change.txid}:{target}"
        db._changed_one(target, tables, once)
