"""Capture of writes to the tenants' own databases, published as their tenant.

Each tenant engine gets a ``LocalCapture`` whose commits are recorded as that tenant,
whatever tenant the writing code runs as (the database *is* the tenant). Writes by other
clients are seen through the triggers installed in the tenant's database: one listener per
tenant database that has live queries here, started when its first live query attaches
(before its first run, so no write is missed) and stopped when its last one goes.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import re

    from sqlalchemy import Engine

    from reactive_nb.capture.external import ExternalChange
    from reactive_nb.capture.sources import Source
    from reactive_nb.capture.sqlalchemy import LocalCapture
    from reactive_nb.changes import ChangeRecorder

logger = logging.getLogger(__name__)


class TenantSink:
    """A ``ChangeSink`` for one tenant's database: everything it sees is that tenant's."""

    def __init__(self, recorder: ChangeRecorder, tenant: str) -> None:
        self._recorder = recorder
        self.tenant = tenant

    def committed(self, tenant: str, tables: frozenset[str]) -> None:
        self._recorder.committed(self.tenant, tables)

    def external(self, change: ExternalChange) -> None:
        self._recorder.external(dataclasses.replace(change, tenants=frozenset({self.tenant})))


class TenantCaptures:
    """Local captures and listeners of the tenant databases.

    ``mode`` is the ReactiveDB's ``capture`` setting: ``none`` hooks nothing, ``local``
    only this process's writes, ``auto`` also listens where triggers are installed.
    ``_lock`` guards the three dicts; listeners start and stop outside it (I/O), a
    ``_starting`` marker keeps two threads from starting one tenant's listener twice.
    """

    def __init__(self, recorder: ChangeRecorder, canonical: Callable[[str], str],
                 volatile: Callable[[], re.Pattern[str] | None], mode: str) -> None:
        self._recorder = recorder
        self._canonical = canonical
        self._volatile = volatile
        self.mode = mode
        self._lock = threading.Lock()
        self._local: dict[str, LocalCapture] = {}
        #: tenant -> its listener, or None: decided, no listener (shared database, no
        #: triggers, or being started).
        self._sources: dict[str, Source | None] = {}
        self._starting: set[str] = set()
        self._closed = False

    def hook(self, tenant: str, engine: Engine) -> Callable[[], None]:
        """Capture this process's writes through ``engine`` as ``tenant``; returns the undo."""
        if self.mode == "none":
            return lambda: None
        from reactive_nb.capture.sqlalchemy import LocalCapture

        sink = TenantSink(self._recorder, tenant)
        capture = LocalCapture(engine, sink.committed, self._canonical)
        capture.volatile = self._volatile()
        with self._lock:
            self._local[tenant] = capture

        def unhook() -> None:
            self.unlisten(tenant)
            with self._lock:
                if self._local.get(tenant) is capture:
                    del self._local[tenant]
            capture.remove()

        return unhook

    def decided(self, tenant: str) -> bool:
        """Whether ``listen`` already ran for the tenant (the fast path of every attach)."""
        with self._lock:
            return tenant in self._sources or tenant in self._starting

    def listen(self, tenant: str, engine: Engine | None) -> bool:
        """Start the tenant database's listener if it has triggers (``engine`` None: the
        tenant shares the main database, whose listener the ReactiveDB owns). Idempotent;
        True when a listener runs for the tenant afterwards."""
        with self._lock:
            if self._closed or self.mode != "auto" or tenant in self._starting:
                return False
            if tenant in self._sources:
                return self._sources[tenant] is not None
            if engine is None:
                self._sources[tenant] = None
                return False
            self._starting.add(tenant)
            local = self._local.get(tenant)
        source: Source | None = None
        try:
            from reactive_nb.capture.sources import start_external

            source = start_external(engine, TenantSink(self._recorder, tenant), local)
        except Exception:
            logger.warning("cannot listen for writes to the database of tenant %r; its live "
                           "queries see this process's writes only", tenant, exc_info=True)
        if source is not None and local is not None:
            local.volatile = None  # the triggers report what functions write
        with self._lock:
            self._starting.discard(tenant)
            keep = not self._closed
            if keep:
                self._sources[tenant] = source
        if source is not None and not keep:
            source.close()
            return False
        return source is not None

    def unlisten(self, tenant: str) -> None:
        """Stop the tenant's listener (its last live query went) and forget the decision."""
        with self._lock:
            source = self._sources.pop(tenant, None)
            local = self._local.get(tenant)
        if source is not None:
            source.close()
            if local is not None:
                local.before_commit = None
                local.volatile = self._volatile()

    def forget(self) -> list[str]:
        """Forget the "no listener" decisions (triggers were just installed); returns the
        tenants whose decision was dropped, so the caller can decide them again."""
        with self._lock:
            undecided = [t for t, s in self._sources.items() if s is None]
            for tenant in undecided:
                del self._sources[tenant]
        return undecided

    def listening(self) -> list[str]:
        """Tenants whose database listener runs."""
        with self._lock:
            return sorted(t for t, s in self._sources.items() if s is not None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sources = [s for s in self._sources.values() if s is not None]
            self._sources.clear()
            captures, self._local = list(self._local.values()), {}
        for source in sources:
            source.close()
        for capture in captures:
            capture.remove()
