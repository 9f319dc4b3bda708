"""Table version counters: one integer per (tenant, table).

A cached result records the versions of its watched tables read *before* its handler
ran, and is fresh only while every one still matches. That makes freshness independent
of event delivery: a lost change event costs latency, never a stale read. The table name
``"*"`` (:data:`reactive_nb.events.ALL_TABLES`) is an ordinary counter meaning "every
table"; callers include it in every watched set.

Two implementations share one interface (and one test suite): :class:`MemoryVersions`
for a single process, :class:`RedisVersions` shared by every process on one Redis.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import redis

__all__ = ["ONCE_TTL", "MemoryVersions", "RedisVersions", "Versions"]

#: Seconds during which a ``once_id`` passed to :meth:`Versions.bump` is remembered.
ONCE_TTL = 600


@runtime_checkable
class Versions(Protocol):
    """Version counters of tables, per tenant. A table never bumped has version 0."""

    def snapshot(self, tenant: str) -> dict[str, int]:
        """Every counter of the tenant; tables never bumped are absent (version 0)."""
        ...

    def get(self, tenant: str, tables: Iterable[str]) -> dict[str, int]:
        """The counters of these tables only, 0 for a table never bumped."""
        ...

    def bump(
        self, tenant: str, tables: Iterable[str], once_id: str | None = None
    ) -> dict[str, int] | None:
        """Add 1 to each table's counter atomically and return the new values.

        With ``once_id``: when a bump with that id (and tenant) was already done within
        the last :data:`ONCE_TTL` seconds, by any process sharing the store, do nothing
        and return None. Several processes hearing the same PostgreSQL NOTIFY all try to
        bump; exactly one succeeds.
        """
        ...

    def close(self) -> None:
        """Release what this object owns (idempotent)."""
        ...


def _unique(tables: Iterable[str]) -> list[str]:
    """Table names without repeats, in first-seen order: a table is bumped once."""
    return list(dict.fromkeys(tables))


class MemoryVersions:
    """Counters in a dict, for one process.

    ``clock`` (monotonic seconds) only times how long a ``once_id`` is remembered;
    tests inject a fake one.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, once_ttl: float = ONCE_TTL
    ) -> None:
        self._clock = clock
        self._once_ttl = once_ttl
        # Guards _counters and _once. Every critical section is a few dict operations
        # with no I/O, so the lock is never held for long and is effectively uncontended.
        self._lock = threading.Lock()
        self._counters: dict[str, dict[str, int]] = {}
        # (tenant, once_id) -> monotonic expiry, in insertion order. The window is the
        # same for every id, so insertion order is expiry order and pruning pops from
        # the front only.
        self._once: OrderedDict[tuple[str, str], float] = OrderedDict()

    def snapshot(self, tenant: str) -> dict[str, int]:
        with self._lock:
            return dict(self._counters.get(tenant, {}))

    def get(self, tenant: str, tables: Iterable[str]) -> dict[str, int]:
        names = _unique(tables)
        with self._lock:
            counters = self._counters.get(tenant, {})
            return {t: counters.get(t, 0) for t in names}

    def bump(
        self, tenant: str, tables: Iterable[str], once_id: str | None = None
    ) -> dict[str, int] | None:
        names = _unique(tables)
        now = self._clock()
        with self._lock:
            if once_id is not None:
                while self._once and next(iter(self._once.values())) <= now:
                    self._once.popitem(last=False)
                if (tenant, once_id) in self._once:
                    return None
                self._once[(tenant, once_id)] = now + self._once_ttl
            counters = self._counters.setdefault(tenant, {})
            for t in names:
                counters[t] = counters.get(t, 0) + 1
            return {t: counters[t] for t in names}

    def close(self) -> None:
        """Nothing to release: the counters stay readable."""


# KEYS[1]: the tenant's versions hash; KEYS[2] (optional): the once key.
# ARGV[1]: once TTL in seconds; ARGV[2..]: table names (already unique).
# Returns the new values in ARGV order, or nil when the once key already existed.
_BUMP_LUA = """
if #KEYS == 2 then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[1])) then
    return false
  end
end
local out = {}
for i = 2, #ARGV do
  out[i - 1] = redis.call('HINCRBY', KEYS[1], ARGV[i], 1)
end
return out
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisVersions:
    """Counters in Redis, shared by every process using the same server and prefix.

    Layout: one hash per tenant, ``<prefix>:{<tenant>}:versions`` (field = table,
    value = counter, incremented with HINCRBY), and one key
    ``<prefix>:{<tenant>}:once:<id>`` per remembered ``once_id`` (expires after
    :data:`ONCE_TTL` seconds). The tenant is a hash tag, so a tenant's keys share one
    cluster slot and a bump is one atomic script. Works with ``decode_responses`` on or
    off. The client belongs to the caller: :meth:`close` does not close it.
    """

    def __init__(
        self, client: redis.Redis, prefix: str = "rnb", once_ttl: int = ONCE_TTL
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._once_ttl = int(once_ttl)
        self._bump_script = client.register_script(_BUMP_LUA)

    def _key(self, tenant: str) -> str:
        return f"{self._prefix}:{{{tenant}}}:versions"

    def _once_key(self, tenant: str, once_id: str) -> str:
        return f"{self._prefix}:{{{tenant}}}:once:{once_id}"

    def snapshot(self, tenant: str) -> dict[str, int]:
        raw: Mapping[Any, Any] = self._client.hgetall(self._key(tenant))
        return {_text(k): int(v) for k, v in raw.items()}

    def get(self, tenant: str, tables: Iterable[str]) -> dict[str, int]:
        names = _unique(tables)
        if not names:
            return {}
        values: list[Any] = self._client.hmget(self._key(tenant), names)
        return {t: 0 if v is None else int(v) for t, v in zip(names, values, strict=True)}

    def bump(
        self, tenant: str, tables: Iterable[str], once_id: str | None = None
    ) -> dict[str, int] | None:
        names = _unique(tables)
        keys = [self._key(tenant)]
        if once_id is not None:
            keys.append(self._once_key(tenant, once_id))
        elif not names:
            return {}
        result: Any = self._bump_script(keys=keys, args=[self._once_ttl, *names])
        if result is None:
            return None
        return {t: int(v) for t, v in zip(names, result, strict=True)}

    def close(self) -> None:
        """Nothing to release: the Redis client belongs to the caller."""
