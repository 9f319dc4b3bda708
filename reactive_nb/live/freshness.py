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
from reactive_nb.stores.versions import EPOCH

if TYPE_CHECKING:
    from reactive_nb.stores.versions import Versions

#: Entry in a cached result's versions holding its function's definition fingerprint, so
#: a redefined function (a re-run cell with new SQL) never serves the old definition's
#: results, in this process or another one sharing the cache.
DEFINITION = "@definition"

#: (scope, ((recorded name, counter), ...)) for each scope to read; None: never fresh.
Plan = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


def versions_now(versions: Versions, tenant: str,
                 watched: frozenset[str]) -> dict[str, int]:
    """The counters a result of ``tenant`` over ``watched`` records, read BEFORE its
    handler runs (raises the store's errors: the caller then does not cache)."""
    before: dict[str, int] = {}
    for scope, counters in counters_read(tenant, watched).items():
        snapshot = versions.snapshot(scope)
        before.update({name: snapshot.get(counter, 0) for name, counter in counters.items()})
    return before


def is_fresh(versions: Versions, tenant: str, watched: frozenset[str], fingerprint: int,
             recorded: Mapping[str, int]) -> bool:
    """Same definition, and every counter the entry recorded still has its value."""
    if recorded.get(DEFINITION) != fingerprint:
        return False
    return is_current(versions, tenant, watched, recorded)


def is_current(versions: Versions, tenant: str, watched: frozenset[str],
               recorded: Mapping[str, int]) -> bool:
    """Every counter the entry recorded still has the value it recorded."""
    plan = _plan(tenant, watched, frozenset(recorded))
    if plan is None:
        return False
    for scope, wanted in plan:
        now = versions.get(scope, [counter for _, counter in wanted])
        for name, counter in wanted:
            if now.get(counter, 0) != recorded[name]:
                return False
    return True


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
