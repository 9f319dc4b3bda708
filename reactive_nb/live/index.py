"""Who watches what: the index from (tenant, table) to the groups of live queries.

The one answer, inside a process, to "which live queries does this change make stale",
following the scope rules of ``changes.counters_read``: a tenant's change reaches that
tenant's groups; an unscoped change reaches every tenant's groups watching the table; the
``t@tenants`` announcement of a tenant's write reaches the unscoped groups. It costs
O(affected groups) per change, whatever the number of live queries or tenants. The
scheduler owns the only ``WatchIndex`` and mutates it under its own lock; everything else
gets the read-only ``IndexView``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, TypeVar

from reactive_nb.changes import BY_TENANTS
from reactive_nb.events import ALL_TABLES, DEFAULT_TENANT, Change

if TYPE_CHECKING:
    from reactive_nb.live.functions import ReactiveFunction


class Watcher(Protocol):
    """What the index needs of a group: its tenant and function (for watched tables)."""

    @property
    def tenant(self) -> str: ...
    @property
    def fn(self) -> ReactiveFunction: ...


W = TypeVar("W", bound=Watcher)


class IndexView(Protocol[W]):
    """Read-only questions about the index."""

    def affected(self, change: Change) -> set[W]: ...
    def tenants(self) -> list[str]: ...


class WatchIndex(IndexView[W]):
    """(tenant, table) -> watchers, and tenant -> watchers. Not thread-safe: the owner locks."""

    def __init__(self) -> None:
        self._by_table: dict[tuple[str, str], set[W]] = {}
        self._any_tenant: dict[str, set[W]] = {}  # table -> watchers of every real tenant
        self._by_tenant: dict[str, set[W]] = {}
        self._indexed: dict[W, frozenset[str]] = {}

    def add(self, watcher: W) -> None:
        self._by_tenant.setdefault(watcher.tenant, set()).add(watcher)
        self._indexed.setdefault(watcher, frozenset())
        self.reindex(watcher)

    def reindex(self, watcher: W, watched: frozenset[str] | None = None) -> None:
        """Follow the watcher's current watched tables (inferred dependencies grow, a view
        is redefined over other tables); ``watched``: its function's, computed by the
        caller outside its lock (it may re-read the catalog)."""
        before = self._indexed.get(watcher)
        if before is None:
            return
        watched = (watcher.fn.watched if watched is None else watched) - {ALL_TABLES}
        if watched == before:
            return
        for table in before - watched:
            self._unindex(watcher, table)
        for table in watched - before:
            self._by_table.setdefault((watcher.tenant, table), set()).add(watcher)
            if watcher.tenant == DEFAULT_TENANT:
                slot = (DEFAULT_TENANT, table + BY_TENANTS)
                self._by_table.setdefault(slot, set()).add(watcher)
            else:
                self._any_tenant.setdefault(table, set()).add(watcher)
        self._indexed[watcher] = watched

    def _unindex(self, watcher: W, table: str) -> None:
        self._discard((watcher.tenant, table), watcher)
        if watcher.tenant == DEFAULT_TENANT:
            self._discard((DEFAULT_TENANT, table + BY_TENANTS), watcher)
            return
        bucket = self._any_tenant.get(table)
        if bucket is not None:
            bucket.discard(watcher)
            if not bucket:
                del self._any_tenant[table]

    def remove(self, watcher: W) -> None:
        for table in self._indexed.pop(watcher, frozenset()):
            self._unindex(watcher, table)
        group = self._by_tenant.get(watcher.tenant)
        if group is not None:
            group.discard(watcher)
            if not group:
                del self._by_tenant[watcher.tenant]

    def _discard(self, slot: tuple[str, str], watcher: W) -> None:
        bucket = self._by_table.get(slot)
        if bucket is not None:
            bucket.discard(watcher)
            if not bucket:
                del self._by_table[slot]

    def affected(self, change: Change) -> set[W]:
        """The watchers whose results the change can make stale (see the module doc)."""
        unscoped = change.tenant == DEFAULT_TENANT
        if change.all_tables:  # every table of one tenant, or of everyone
            if not unscoped:
                return set(self._by_tenant.get(change.tenant, ()))
            return set().union(*self._by_tenant.values())
        hit: set[W] = set()
        for table in change.tables:
            hit |= self._by_table.get((change.tenant, table), set())
            if unscoped:
                hit |= self._any_tenant.get(table, set())
        if unscoped and ALL_TABLES + BY_TENANTS in change.tables:  # a tenant's "everything"
            hit |= self._by_tenant.get(DEFAULT_TENANT, set())
        return hit

    def of_function(self, fn: ReactiveFunction) -> Iterable[W]:
        return [w for w in self._indexed if w.fn is fn]

    def has_tenant(self, tenant: str) -> bool:
        return tenant in self._by_tenant

    def tenants(self) -> list[str]:
        return list(self._by_tenant)
