"""The stale-read rule: when a cached result may be served.

A result is served only if every counter it recorded before its handler ran still has the
value it recorded, in its definition's version space: the same definition fingerprint, the
same epoch (the Redis keyspace cannot have gone back), the same per-(scope, table)
counters (``changes.counters_read`` says which). Everything that decides "fresh" lives
here, so the rule has one owner.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

from reactive_nb.changes import UNSCOPED, counters_read
from reactive_nb.events import ALL_TABLES
from reactive_nb.stores.versions import EPOCH

if TYPE_CHECKING:
    from reactive_nb.stores.versions import Versions

#: Entry in a cached result's versions holding its function's definition fingerprint, so
#: a redefined function (a re-run cell with new SQL) never serves the old definition's
#: results, in this process or another one sharing the cache.
DEFINITION = "@definition"

#: (scope, ((recorded name, counter), ...)) for each scope to read; None: never fresh.
Plan = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


#: Every counter of every scope a result of one tenant reads, as read before its handler
#: ran: scope -> {counter: value}.
Snapshot = dict[str, dict[str, int]]


def scopes(tenant: str) -> tuple[str, ...]:
    """The counter scopes a result of ``tenant`` records."""
    return tuple(counters_read(tenant, ()))


def snapshot(versions: Versions, tenant: str) -> Snapshot:
    """Read every counter of the scopes a result of ``tenant`` records, BEFORE its handler
    runs (raises the store's errors: the caller then does not cache). Whole scopes, so the
    tables a first run turns out to read (inferred dependencies, learned only after it)
    are recorded with their values from before the run too."""
    return {scope: versions.snapshot(scope) for scope in counters_read(tenant, ())}


def recorded(before: Snapshot, tenant: str, watched: frozenset[str]) -> dict[str, int]:
    """What a result over ``watched`` records from ``before`` (see ``counters_read``)."""
    versions: dict[str, int] = {}
    for scope, counters in counters_read(tenant, watched).items():
        values = before[scope]
        versions.update({name: values.get(counter, 0) for name, counter in counters.items()})
    return versions


def is_fresh(versions: Versions, tenant: str, watched: frozenset[str], fingerprint: int,
             entry: Mapping[str, int],
             known: Mapping[str, Mapping[str, int]] | None = None) -> bool:
    """Same definition, and every counter the entry recorded still has its value."""
    if entry.get(DEFINITION) != fingerprint:
        return False
    return is_current(versions, tenant, watched, entry, known)


def is_current(versions: Versions, tenant: str, watched: frozenset[str],
               entry: Mapping[str, int],
               known: Mapping[str, Mapping[str, int]] | None = None) -> bool:
    """Every counter the entry recorded still has the value it recorded. ``known``: scope ->
    every counter of the scope (its epoch included), read in one step with the entry (a
    lease announcement's); the other scopes are read from ``versions``."""
    plan = _plan(tenant, watched, frozenset(entry))
    if plan is None:
        return False
    for scope, wanted in plan:
        read = known.get(scope) if known else None
        now = read if read is not None else versions.get(scope, [c for _, c in wanted])
        for name, counter in wanted:
            if now.get(counter, 0) != entry[name]:
                return False
    return True


def recorded_tables(entry: Mapping[str, int]) -> frozenset[str]:
    """The tables whose counters an entry recorded (in its own scope): what the process
    that ran it watched. Another process that has not run the function yet learns its
    inferred dependencies from them."""
    return frozenset(name for name in entry if not name.startswith(UNSCOPED)
                     and name not in (EPOCH, DEFINITION, ALL_TABLES))


@functools.lru_cache(maxsize=4096)
def _plan(tenant: str, watched: frozenset[str], recorded: frozenset[str]) -> Plan | None:
    """Which counters to compare, memoised: a hit pays for two dict lookups, not for
    rebuilding the scope plan. The tables the entry recorded count too: a process whose
    inferred dependencies are not learned yet (its first call was a hit) must still check
    them all."""
    tables = watched | {name for name in recorded
                        if not name.startswith(UNSCOPED) and name not in (EPOCH, DEFINITION)}
    plan = []
    for scope, counters in counters_read(tenant, tables).items():
        wanted = tuple((name, counter) for name, counter in counters.items()
                       if name in recorded)
        if len(wanted) != len(counters):
            return None  # recorded under other watched tables: not this definition's
        plan.append((scope, wanted))
    return tuple(plan)
