"""Wiring of external change sources (database triggers) into a ReactiveDB.

With ``capture="auto"`` a ReactiveDB listens for writes made outside this process on a
database that has reactive_nb triggers (installed by ``db.install_triggers()``, the
``reactive-nb install-triggers`` command, or ``connect(..., install=True)``). Each
notification bumps versions once per (transaction, tenant) even when several processes
share one Redis (the bump carries a ``once_id``), then is published like a local change.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from ..events import ALL_TABLES

if TYPE_CHECKING:
    from ..db import ReactiveDB
    from .external import ExternalChange

logger = logging.getLogger(__name__)


class Source(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...


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
    def deliver(change: ExternalChange) -> None:
        on_external(db, change)

    if db.engine.dialect.name == "postgresql":
        from .postgres import PostgresListener, conninfo_from_url

        return PostgresListener(conninfo_from_url(db.engine.url), deliver)
    from .sqlite import SqlitePoller

    path = db.engine.url.database
    if not path or path == ":memory:":
        raise ValueError("external capture needs a SQLite file, not an in-memory database")
    return SqlitePoller(path, deliver)


def installed(db: ReactiveDB) -> bool:
    module = _module(db)
    return bool(module.installed_tables(db.engine))


def install_triggers(db: ReactiveDB, tables: Any) -> list[str]:
    """Install triggers on ``tables`` (None: every table a reactive function watches)."""
    if tables is None:
        watched: set[str] = set()
        for fn in db.functions.values():
            watched |= fn.watched
        tables = sorted(watched - {ALL_TABLES}) or db.tables
    names = sorted(db.resolve_tables(tables, "install_triggers"))
    module = _module(db)
    if db.engine.dialect.name == "postgresql":
        result: list[str] = module.install_triggers(db.engine, names, db.tenant_column)
    else:
        result = module.install_triggers(db.engine, names)
    return result


def uninstall_triggers(db: ReactiveDB) -> None:
    _module(db).uninstall_triggers(db.engine)


def _module(db: ReactiveDB) -> Any:
    name = db.engine.dialect.name
    if name == "postgresql":
        from . import postgres

        return postgres
    if name == "sqlite":
        from . import sqlite

        return sqlite
    raise ValueError(f"external change capture is not available for {name} databases")


def on_external(db: ReactiveDB, change: ExternalChange) -> None:
    """Turn a trigger notification into version bumps and published changes."""
    tables = frozenset({ALL_TABLES}) if change.lost else change.tables
    if change.tenants is not None:
        tenants = set(change.tenants)
    else:  # unknown: every tenant this process shows, and the default one
        from ..events import DEFAULT_TENANT

        tenants = {DEFAULT_TENANT, *db.scheduler.tenants()}
    for tenant in tenants:
        db._changed(tenant, tables, once_id=None if change.lost else f"{change.txid}:{tenant}")
