"""The change recorder: every committed write becomes version bumps, then a published change.

This is the single answer to "which (tenant, table) does this commit touch": capture
sources report commits into it (``ChangeSink``); it widens them to the tenants whose
results they can change, bumps those versions first (so a change is never seen before its
versions) and then publishes on the bus, from which the scheduler and every other
subscriber hear it. Nothing else bumps versions or publishes changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from reactive_nb.events import ALL_TABLES, DEFAULT_TENANT, Change

if TYPE_CHECKING:
    from reactive_nb.capture.external import ExternalChange
    from reactive_nb.stores.bus import Bus
    from reactive_nb.stores.health import StoreHealth
    from reactive_nb.stores.versions import Versions

logger = logging.getLogger(__name__)


class ChangeRecorder:
    """Implements ``capture.sink.ChangeSink`` over one ReactiveDB's versions and bus.

    ``known_tenants`` lists the tenants this process knows (registered ones and those it
    has live queries for): an unscoped write reaches each of them.
    """

    def __init__(self, versions: Versions, bus: Bus, health: StoreHealth,
                 known_tenants: Callable[[], Iterable[str]],
                 widen: Callable[[frozenset[str]], frozenset[str]] = lambda tables: tables,
                 ) -> None:
        self._versions = versions
        self._bus = bus
        self._health = health
        self._known_tenants = known_tenants
        self._widen = widen

    def affected_tenants(self, tenant: str) -> set[str]:
        """Whose results a write "as" ``tenant`` can change.

        A tenant's write reaches that tenant and the unscoped default view (which may read
        every tenant's rows). An unscoped write (default tenant) reaches every tenant this
        process knows.
        """
        if tenant != DEFAULT_TENANT:
            return {tenant, DEFAULT_TENANT}
        return {DEFAULT_TENANT, *self._known_tenants()}

    # -- ChangeSink ------------------------------------------------------------------------

    def committed(self, tenant: str, tables: frozenset[str]) -> None:
        """A write of this process committed: record it for every affected tenant.

        The written tables are widened first: an ``ON DELETE CASCADE`` writes the child
        tables the SQL never names, a write through a view writes its base tables.
        """
        tables = self._widen(tables)
        for target in self.affected_tenants(tenant):
            self._record(target, tables, None)

    def external(self, change: ExternalChange) -> None:
        """Another client's committed write, as a trigger reported it.

        Every listening process receives the same notification, so the bump carries a
        once-id: only the first process bumps and publishes to the others, every process
        refreshes its own live queries. The id names the transaction, the tenant and the
        tables, since one transaction notifies once per table it wrote.
        """
        tables = frozenset({ALL_TABLES}) if change.lost else self._widen(change.tables)
        targets: set[str] = set()
        for tenant in change.tenants if change.tenants is not None else [DEFAULT_TENANT]:
            targets |= self.affected_tenants(tenant)
        names = ",".join(sorted(tables))
        for target in targets:
            once = None if change.lost else f"{change.txid}:{target}:{names}"
            self._record(target, tables, once)

    # -- by hand ---------------------------------------------------------------------------

    def invalidate(self, tenant: str, tables: frozenset[str]) -> None:
        """Tables declared changed by the user (``db.invalidate``)."""
        for target in self.affected_tenants(tenant):
            self._record(target, tables, None)

    def gap(self, tenant: str) -> None:
        """Changes of ``tenant`` from other processes were lost: re-check everything it
        watches here (versions tell what is really stale)."""
        self._bus.publish(Change(tenant, frozenset({ALL_TABLES}), origin="gap"), remote=False)

    def _record(self, tenant: str, tables: frozenset[str], once_id: str | None) -> None:
        """Bump versions first, then publish: a change is never seen before its versions."""
        try:
            bumped = self._versions.bump(tenant, tables, once_id=once_id)
        except self._health.errors as exc:
            self._health.bump_failed(tenant, tables, exc)
            bumped = {}
        # None: another process already bumped (and published) this once-id.
        self._bus.publish(Change(tenant, tables), remote=bumped is not None)
