"""Keeping a tenancy current: re-checking live tenants when the directory's tables change.

Changes to the tables the directory reads (``organization``, ``membership``) arrive on
the bus like any other: ``on_change`` forgets the cached answers at once (so the next
check asks again) and wakes a background thread that re-checks every tenant with live
queries here; a tenant the user lost access to, or whose row is gone, has its live
queries stopped and their frames cleared (``Scheduler.revoke``). The same thread releases
the connections of idle tenant engines. With ``workers=0`` there is no thread: tests call
``recheck()`` and ``sweep()`` themselves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from reactive_nb.changes import BY_TENANTS
from reactive_nb.errors import TenantAccessDenied, TenantNotFound, one_line
from reactive_nb.events import ALL_TABLES, DEFAULT_TENANT, Change
from reactive_nb.threads import Background

if TYPE_CHECKING:
    from reactive_nb.live.scheduler import Scheduler
    from reactive_nb.tenancy.access import AccessControl
    from reactive_nb.tenancy.engines import EnginePool
    from reactive_nb.tenancy.resolve import Resolver

logger = logging.getLogger(__name__)

#: Longest wait of the tenancy thread between two sweeps of idle engines.
SWEEP_CAP = 60.0
#: Pause after a re-check failed (main database unreachable) before trying again.
RETRY_DELAY = 1.0


class Rechecker:
    """Stops the live queries of tenants that are gone or no longer allowed.

    ``directory_tables`` / ``access_tables``: what the lookup and list queries, and the
    access query, read. ``follow`` starts listening to a tenant's database (called again
    for a tenant whose database moved). With ``background`` a thread named ``tenancy``
    runs ``recheck`` when something is due and ``sweep`` in between.
    """

    def __init__(self, scheduler: Scheduler, resolver: Resolver, access: AccessControl | None,
                 engines: EnginePool, *, directory_tables: frozenset[str],
                 access_tables: frozenset[str], follow: Callable[[str], None],
                 background: bool) -> None:
        self._scheduler = scheduler
        self._resolver = resolver
        self._access = access
        self._engines = engines
        self._directory_tables = directory_tables
        self._access_tables = access_tables
        self._follow = follow
        # _cond guards the two "due" flags: what the next recheck() must look at.
        self._cond = threading.Condition(threading.Lock())
        self._directory_due = False
        self._access_due = False
        self._thread = Background("tenancy", self._loop, wake=self._wake) if background \
            else None

    def start(self) -> None:
        """Start the thread, if there is one."""
        if self._thread is not None:
            self._thread.start()

    def stop(self) -> None:
        """Stop and join the thread, if there is one."""
        if self._thread is not None:
            self._thread.stop()

    def on_change(self, change: Change) -> None:
        """Bus subscriber (must be quick): forget what a change to the directory's tables
        may have made wrong, and wake the thread that re-checks live tenants."""
        tables = {t.removesuffix(BY_TENANTS) for t in change.tables}
        everything = ALL_TABLES in tables
        directory = everything or not tables.isdisjoint(self._directory_tables)
        access = self._access is not None and (
            everything or not tables.isdisjoint(self._access_tables))
        if not (directory or access):
            return
        if directory:
            self._resolver.invalidate()
        if access and self._access is not None:
            self._access.invalidate()
        with self._cond:
            self._directory_due |= directory
            self._access_due |= access
            self._cond.notify_all()

    def recheck(self, *, everything: bool = False) -> dict[str, str]:
        """Re-check the tenants in use after a change to the directory's tables: a tenant
        whose row is gone, or that this user may no longer open, has its live queries
        stopped and cleared; an engine whose database moved is dropped. Returns
        ``{tenant: error}`` of the stopped ones. ``everything``: as if every table changed."""
        if everything:
            self._resolver.invalidate()
            if self._access is not None:
                self._access.invalidate()
        with self._cond:
            directory, access = self._directory_due or everything, self._access_due or everything
            self._directory_due = self._access_due = False
        live = [t for t in self._scheduler.tenants() if t != DEFAULT_TENANT]
        stopped: dict[str, str] = {}
        moved: list[str] = []
        if directory:
            for tenant in dict.fromkeys([*live, *self._engines.tenants()]):
                try:
                    database = self._resolver.lookup(tenant)
                except TenantNotFound as exc:
                    stopped[tenant] = one_line(exc, typed=True)
                    self._engines.drop(tenant)
                    continue
                current = self._engines.database_of(tenant)
                if current is not None and current != database:
                    self._engines.drop(tenant)
                    moved.append(tenant)
        if access and self._access is not None:
            remaining = [t for t in live if t not in stopped]
            for tenant, granted in self._access.ask(remaining).items():
                if not granted:
                    denied = TenantAccessDenied(self._access.user, tenant)
                    stopped[tenant] = one_line(denied, typed=True)
        for tenant, error in stopped.items():
            self._scheduler.revoke(tenant, error)
        for tenant in moved:
            if tenant not in stopped:
                self._follow(tenant)  # listen to the database it moved to
        return stopped

    def sweep(self) -> float:
        """Release the connections of idle tenant engines; seconds until the next is due."""
        return self._engines.sweep()

    def _loop(self, stop: threading.Event) -> None:
        wait = min(self._engines.idle_timeout, SWEEP_CAP)
        while not stop.is_set():
            with self._cond:
                if not (self._directory_due or self._access_due):
                    self._cond.wait(wait)
            if stop.is_set():
                return
            try:
                self.recheck()
            except Exception as exc:  # the main database is unreachable: try again later
                logger.warning("re-checking tenants failed (%s); retrying", one_line(exc))
                with self._cond:
                    self._directory_due = self._access_due = True
                stop.wait(RETRY_DELAY)
            wait = min(self.sweep(), SWEEP_CAP)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
