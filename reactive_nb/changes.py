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

from reactive_nb.events import ALL_TABLES, DEFAULT_TENANT, PROCESS_ORIGIN, Change
from reactive_nb.stores.versions import EPOCH

if TYPE_CHECKING:
    from reactive_nb.capture.external import ExternalChange
    from reactive_nb.stores.bus import Bus
    from reactive_nb.stores.health import StoreHealth
    from reactive_nb.stores.versions import Versions

logger = logging.getLogger(__name__)

#: Recorded versions read from the unscoped scope carry this prefix (``~agent``).
UNSCOPED = "~"
#: Counter, in the unscoped scope, of writes made *as some tenant* (``agent@tenants``).
BY_TENANTS = "@tenants"


def counters_read(tenant: str, tables: Iterable[str]) -> dict[str, dict[str, str]]:
    """Which counters a result of ``tenant`` over ``tables`` records: scope -> {recorded
    name: counter}. Every result also records the unscoped scope, so one bump there (an
    unscoped write) reaches every tenant's results in O(1); a tenant's result does not read
    other tenants' counters, and the unscoped view reads the ``@tenants`` counters that
    every tenant write bumps. Each scope's epoch (the ``run_id`` of the Redis node holding
    it, which may differ on a cluster) is recorded too: a restart, a restore from an older
    snapshot or a failover of either node makes the entry stale."""
    if tenant != DEFAULT_TENANT:
        return {tenant: {EPOCH: EPOCH, **{t: t for t in tables}},
                DEFAULT_TENANT: {UNSCOPED + EPOCH: EPOCH, **{UNSCOPED + t: t for t in tables}}}
    plan = {EPOCH: EPOCH, **{t: t for t in tables}}
    plan.update({UNSCOPED + t: t + BY_TENANTS for t in tables})
    return {DEFAULT_TENANT: plan}


def counters_bumped(tenant: str, tables: Iterable[str]) -> dict[str, frozenset[str]]:
    """Which counters a write as ``tenant`` bumps: at most two scopes, whatever the number
    of tenants."""
    if tenant != DEFAULT_TENANT:
        return {tenant: frozenset(tables),
                DEFAULT_TENANT: frozenset(t + BY_TENANTS for t in tables)}
    return {DEFAULT_TENANT: frozenset(tables)}


class ChangeRecorder:
    """Implements ``capture.sink.ChangeSink`` over one ReactiveDB's versions and bus.

    A write as a tenant reaches that tenant's results and the unscoped view (which may
    read every tenant's rows); an unscoped write reaches every tenant's results, in every
    process, at the cost of one bump (see ``counters_read``).
    """

    def __init__(self, versions: Versions, bus: Bus, health: StoreHealth,
                 widen: Callable[[frozenset[str]], frozenset[str]] = lambda tables: tables,
                 origin: str = PROCESS_ORIGIN) -> None:
        self._origin = origin
        self._versions = versions
        self._bus = bus
        self._health = health
        self._widen = widen

    # -- ChangeSink ------------------------------------------------------------------------

    def committed(self, tenant: str, tables: frozenset[str]) -> None:
        """A write of this process committed: record it for every affected tenant.

        The written tables are widened first: an ``ON DELETE CASCADE`` writes the child
        tables the SQL never names, a write through a view writes its base tables.
        """
        self._record(tenant, self._widen(tables), None)

    def external(self, change: ExternalChange) -> None:
        """Another client's committed write, as a trigger reported it.

        Every listening process receives the same notification, so the bump carries a
        once-id: only the first process bumps and publishes to the others, every process
        refreshes its own live queries. The id names the transaction, the tenant and the
        tables, since one transaction notifies once per table it wrote.
        """
        tables = frozenset({ALL_TABLES}) if change.lost else self._widen(change.tables)
        names = ",".join(sorted(tables))
        for target in change.tenants if change.tenants is not None else [DEFAULT_TENANT]:
            once = None if change.lost else f"{change.txid}:{target}:{names}"
            self._record(target, tables, once)

    # -- by hand ---------------------------------------------------------------------------

    def invalidate(self, tenant: str, tables: frozenset[str]) -> None:
        """Tables declared changed by the user (``db.invalidate``)."""
        self._record(tenant, tables, None)

    def gap(self, tenant: str) -> None:
        """Changes of ``tenant`` from other processes were lost: re-check everything it
        watches here (versions tell what is really stale)."""
        self._bus.publish(Change(tenant, frozenset({ALL_TABLES}), origin="gap"), remote=False)

    def _record(self, tenant: str, tables: frozenset[str], once_id: str | None) -> None:
        """Bump versions first, then publish: a change is never seen before its versions.

        A tenant's write is also announced on the unscoped stream as ``t@tenants``, for
        the unscoped live queries of every process.
        """
        remote = True
        for scope, counters in counters_bumped(tenant, tables).items():
            try:
                once = None if once_id is None else f"{once_id}:{scope}"
                # None: another process already bumped (and published) this once-id.
                remote = self._versions.bump(scope, counters, once_id=once) is not None
            except self._health.errors as exc:
                self._health.bump_failed(scope, counters, exc)
        self._bus.publish(Change(tenant, tables, self._origin), remote=remote)
        if tenant != DEFAULT_TENANT:
            announced = frozenset(t + BY_TENANTS for t in tables)
            self._bus.publish(Change(DEFAULT_TENANT, announced, self._origin), remote=remote)
