"""Engines of the tenants that have a database of their own.

One engine per tenant, created on first use from the URL template and the database name
the lookup returned, reused afterwards. Creating one connects once, so a database that
does not exist is a ``TenantDatabaseMissing`` at ``open`` rather than an empty dashboard,
and nothing is ever created: no ``CREATE DATABASE`` anywhere, and a SQLite file that is
not there is refused before SQLite could create it. Connections are bounded per tenant
(``pool_size + max_overflow``) and released after ``idle_timeout`` seconds without use
(``sweep``); the engine itself stays, with its capture hooked, until its tenant is gone or
the tenancy closes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reactive_nb.errors import ConfigError, TenantDatabaseMissing
from reactive_nb.tenancy.resolve import plain_database_name

if TYPE_CHECKING:
    from sqlalchemy import URL, Engine

logger = logging.getLogger(__name__)

PLACEHOLDER = "{database}"

#: Called with (tenant, engine) once an engine is created; returns its undo (the capture
#: hooked on the engine, removed when the engine is dropped).
Hook = Callable[[str, "Engine"], Callable[[], None]]


@dataclass(eq=False)
class _Entry:
    database: str
    engine: Engine
    unhook: Callable[[], None]
    last_used: float
    idle: bool = False


class EnginePool:
    """Per-tenant engines; ``_lock`` guards ``_entries`` and the counters (never held
    while connecting or disposing)."""

    def __init__(self, main: Engine, url: str | None, *, hook: Hook,
                 pool_size: int = 2, max_overflow: int = 2, idle_timeout: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if url is not None and PLACEHOLDER not in url:
            raise ConfigError(f"tenancy(): url= must contain {PLACEHOLDER} where the tenant's "
                              f"database name goes, got {url!r}")
        self._main = main
        self._template = url
        self._hook = hook
        self._pool_size = pool_size
        self._max_overflow = max_overflow
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        #: Engines created so far (the benchmark compares it with the tenants used).
        self.opened = 0
        self._closed = False

    def url_for(self, tenant: str, database: str) -> URL:
        """The URL of ``database``: the template with the name put in, or the main
        database's URL (same server, same credentials) with only the database changed."""
        from sqlalchemy import make_url

        name = plain_database_name(tenant, database)
        if self._template is None:
            return self._main.url.set(database=name)
        return make_url(self._template.replace(PLACEHOLDER, name))

    def get(self, tenant: str, database: str) -> Engine:
        """The tenant's engine for ``database``, created (and probed) on first use."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(tenant)
            if entry is not None and entry.database == database:
                entry.last_used, entry.idle = now, False
                return entry.engine
        if entry is not None:  # the lookup now names another database
            self.drop(tenant)
        engine = self.connect_new(tenant, database)
        unhook = self._hook(tenant, engine)
        fresh = _Entry(database, engine, unhook, now)
        with self._lock:
            winner = self._entries.get(tenant)
            if winner is None and not self._closed:
                self._entries[tenant] = fresh
                self.opened += 1
        if winner is None and not self._closed:
            return engine
        unhook()  # another thread created one meanwhile (or we closed): keep one
        engine.dispose()
        if winner is None:
            from reactive_nb.errors import ClosedError

            raise ClosedError("this tenancy is closed")
        return winner.engine

    def connect_new(self, tenant: str, database: str) -> Engine:
        """A new engine on ``database``, connected once (TenantDatabaseMissing if the
        database is not there); not pooled here: ``get`` keeps the one it creates."""
        from sqlalchemy import create_engine
        from sqlalchemy.exc import DBAPIError

        url = self.url_for(tenant, database)
        options: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            path = url.database
            if path and path != ":memory:" and not os.path.exists(path):
                raise TenantDatabaseMissing(tenant, database)  # SQLite would create it
        else:
            options = {"pool_size": self._pool_size, "max_overflow": self._max_overflow}
        engine = create_engine(url, **options)
        try:
            with engine.connect():
                pass
        except DBAPIError as exc:
            engine.dispose()
            if self._missing(exc, database):
                raise TenantDatabaseMissing(tenant, database) from None
            raise
        return engine

    def _missing(self, exc: BaseException, database: str) -> bool:
        """Whether connecting failed because the database does not exist (PostgreSQL
        ``3D000``; libpq reports it at connect time without a SQLSTATE, so the main
        server's ``pg_database`` is asked when the tenant's is the same server)."""
        orig = getattr(exc, "orig", None)
        if getattr(orig, "sqlstate", None) == "3D000":
            return True
        url = self.url_for("", database)
        main = self._main.url
        if (url.get_backend_name() == main.get_backend_name() == "postgresql"
                and (url.host, url.port) == (main.host, main.port)):
            from sqlalchemy import text

            try:
                with self._main.connect() as conn:
                    found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"),
                                         {"d": database}).first()
                return found is None
            except Exception:  # the main server is unreachable too: say what we know
                logger.debug("could not ask pg_database", exc_info=True)
        return f'database "{database}" does not exist' in str(orig)

    def database_of(self, tenant: str) -> str | None:
        with self._lock:
            entry = self._entries.get(tenant)
        return None if entry is None else entry.database

    def engine_of(self, tenant: str) -> Engine | None:
        """The tenant's engine if one is open (no lookup, no creation)."""
        with self._lock:
            entry = self._entries.get(tenant)
        return None if entry is None else entry.engine

    def tenants(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def drop(self, tenant: str) -> None:
        """Forget the tenant's engine: unhook its capture and close its connections."""
        with self._lock:
            entry = self._entries.pop(tenant, None)
        if entry is not None:
            entry.unhook()
            entry.engine.dispose()

    def sweep(self) -> float:
        """Release the connections of engines idle for ``idle_timeout``; returns the
        seconds until the next one may be due."""
        now = self._clock()
        due: list[Engine] = []
        next_due = self.idle_timeout
        with self._lock:
            for entry in self._entries.values():
                if entry.idle:
                    continue
                left = entry.last_used + self.idle_timeout - now
                if left <= 0:
                    entry.idle = True
                    due.append(entry.engine)
                else:
                    next_due = min(next_due, left)
        for engine in due:
            engine.dispose()  # checked-out connections close when returned
        return next_due

    def idle(self) -> list[str]:
        """Tenants whose engine holds no pooled connection since the last sweep."""
        with self._lock:
            return [t for t, e in self._entries.items() if e.idle]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            entry.unhook()
            entry.engine.dispose()
