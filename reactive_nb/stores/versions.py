"""Table version counters: one integer per (tenant, table).

A cached result records the versions of its watched tables read *before* its handler
ran, and is fresh only while every one still matches. That makes freshness independent
of event delivery: a lost change event costs latency, never a stale read. The table name
``"*"`` (:data:`reactive_nb.events.ALL_TABLES`) is an ordinary counter meaning "every
table"; callers include it in every watched set.

The pseudo-table :data:`EPOCH` names the version space itself: it changes whenever the
counters may have been lost or rolled back (a Redis restart, restore or failover), so an
entry that recorded it is stale afterwards even if the counters went back to the values
it recorded.

Two implementations share one interface (and one test suite): :class:`MemoryVersions`
for a single process, :class:`RedisVersions` shared by every process on one Redis.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import redis

    from reactive_nb.stores.health import Breaker
    from reactive_nb.stores.slots import SlotRetry

__all__ = ["EPOCH", "ONCE_TTL", "MemoryVersions", "RedisVersions", "Versions"]

logger = logging.getLogger("reactive_nb")

#: Pseudo-table whose "version" identifies the version space: :meth:`Versions.get` returns
#: it when asked, :meth:`Versions.snapshot` always includes it. It is never bumped; it
#: changes when the counters may have gone backwards, which makes every entry recorded
#: before that stale.
EPOCH = "@epoch"

#: Seconds during which a ``once_id`` passed to :meth:`Versions.bump` is remembered.
ONCE_TTL = 600


@runtime_checkable
class Versions(Protocol):
    """Version counters of tables, per tenant. A table never bumped has version 0."""

    def snapshot(self, tenant: str) -> dict[str, int]:
        """Every counter of the tenant, plus :data:`EPOCH`; tables never bumped are absent
        (version 0)."""
        ...

    def get(self, tenant: str, tables: Iterable[str]) -> dict[str, int]:
        """The counters of these tables only, 0 for a table never bumped; :data:`EPOCH`
        among them is the current epoch, read in the same step as the counters."""
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


def _counted(tables: Iterable[str]) -> list[str]:
    """Unique table names that are real counters (not :data:`EPOCH`, which is never
    bumped)."""
    return [t for t in _unique(tables) if t != EPOCH]


class MemoryVersions:
    """Counters in a dict, for one process.

    ``clock`` (monotonic seconds) only times how long a ``once_id`` is remembered;
    tests inject a fake one. The epoch is random and fixed for the object's life: its
    counters cannot go backwards, and no other object shares them.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, once_ttl: float = ONCE_TTL
    ) -> None:
        self._clock = clock
        self._once_ttl = once_ttl
        self.epoch = secrets.randbits(60)
        # Guards _counters and _once. Every critical section is a few dict operations
        # with no I/O, so the lock is never held for long and is effectively uncontended.
        self._lock = threading.Lock()
        self._counters: dict[str, dict[str, int]] = {}
        # (tenant, once_id) -> monotonic expiry, in insertion order. The window is the
        # same for every id, so insertion order is expiry order and pruning pops from
        # the front only.
        self._once: OrderedDict[tuple[str, str], float] = OrderedDict()

    @property
    def remembered_once_ids(self) -> int:
        """How many once-ids are remembered (expired ones are pruned at the next bump)."""
        with self._lock:
            return len(self._once)

    def snapshot(self, tenant: str) -> dict[str, int]:
        with self._lock:
            return {**self._counters.get(tenant, {}), EPOCH: self.epoch}

    def get(self, tenant: str, tables: Iterable[str]) -> dict[str, int]:
        epoch = self.epoch
        with self._lock:  # no copy of the scope's counters: a hit reads a few of many
            counters = self._counters.get(tenant, {})
            return {t: epoch if t == EPOCH else counters.get(t, 0) for t in tables}

    def bump(
        self, tenant: str, tables: Iterable[str], once_id: str | None = None
    ) -> dict[str, int] | None:
        names = _counted(tables)
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


# The epoch is the server's run_id, read by the same script as the counters: one round
# trip, and no window in which a restart could fall between the two. INFO is allowed in
# scripts (it writes nothing); the run_id changes at every restart, restore and failover.
#: A Lua expression: the server's run_id (the counters' epoch), or nil when it has none.
#: Also read by the lease scripts that announce counters (``stores.lease``).
RUN_ID_LUA = "string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')"

# KEYS[1]: the tenant's versions hash; ARGV: table names (unique, may be none).
# Returns {run_id or false, values in ARGV order}.
_GET_LUA = f"""
local values = {{}}
if #ARGV > 0 then
  values = redis.call('HMGET', KEYS[1], unpack(ARGV))
end
local run_id = {RUN_ID_LUA} or false
return {{run_id, values}}
"""

# KEYS[1]: the tenant's versions hash. Returns {run_id or false, HGETALL's flat list}.
_SNAPSHOT_LUA = f"""
local flat = redis.call('HGETALL', KEYS[1])
local run_id = {RUN_ID_LUA} or false
return {{run_id, flat}}
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

    :data:`EPOCH` is the server's ``run_id`` (60 bits of it, as an int): it changes when
    Redis restarts, is restored from a snapshot or fails over to a replica, which are the
    ways counters can go backwards.

    With a ``breaker`` (see :mod:`reactive_nb.stores.health`), every call first asks it and
    raises ``StoreUnavailable`` at once while it is open, instead of waiting on Redis. A
    bump with a once key (two keys of one slot) refused because that slot is being moved
    between cluster nodes is run again by ``slot_retry`` (:mod:`reactive_nb.stores.slots`).
    """

    def __init__(
        self, client: redis.Redis, prefix: str = "rnb", once_ttl: int = ONCE_TTL,
        breaker: Breaker | None = None, slot_retry: SlotRetry | None = None,
    ) -> None:
        from reactive_nb.stores.slots import SlotRetry

        self._client = client
        self.breaker = breaker
        self._slot_retry = slot_retry or SlotRetry()
        self._prefix = prefix
        self._once_ttl = int(once_ttl)
        self._bump_script = client.register_script(_BUMP_LUA)
        self._get_script = client.register_script(_GET_LUA)
        self._snapshot_script = client.register_script(_SNAPSHOT_LUA)
        self._warned_no_run_id = False

    def redis_key(self, tenant: str) -> str:
        """The hash holding ``tenant``'s counters (its tenant a hash tag)."""
        return f"{self._prefix}:{{{tenant}}}:versions"

    def _once_key(self, tenant: str, once_id: str) -> str:
        return f"{self._prefix}:{{{tenant}}}:once:{once_id}"

    def epoch_of(self, run_id: bytes | str | None) -> int:
        """The epoch of a ``run_id``; 0 (with one warning) from a server that has none."""
        if run_id:
            return int(_text(run_id)[:15], 16)
        if not self._warned_no_run_id:
            self._warned_no_run_id = True
            logger.warning("this Redis server reports no run_id: cached results cannot be "
                           "told stale after it restarts from older data")
        return 0

    def _guard(self) -> None:
        if self.breaker is not None:
            self.breaker.check()

    def snapshot(self, tenant: str) -> dict[str, int]:
        self._guard()
        result: Any = self._snapshot_script(keys=[self.redis_key(tenant)])
        run_id, flat = result
        return self.counters_of(run_id, flat)

    def counters_of(self, run_id: bytes | str | None, flat: list[Any]) -> dict[str, int]:
        """A scope's counters from its hash read as a flat list (HGETALL's), with
        :data:`EPOCH` from the ``run_id`` read in the same step."""
        counters = {_text(k): int(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
        counters[EPOCH] = self.epoch_of(run_id)
        return counters

    def get(self, tenant: str, tables: Iterable[str]) -> dict[str, int]:
        self._guard()
        names = _unique(tables)
        counted = [t for t in names if t != EPOCH]
        found: dict[str, int] = {}
        values: list[Any]
        if len(counted) < len(names):  # the epoch is asked: read it with the counters
            result: Any = self._get_script(keys=[self.redis_key(tenant)], args=counted)
            run_id, values = result
            found[EPOCH] = self.epoch_of(run_id)
        elif counted:
            values = self._client.hmget(self.redis_key(tenant), counted)
        else:
            return {}
        found.update((t, 0 if v is None else int(v)) for t, v in zip(counted, values,
                                                                      strict=True))
        return {t: found[t] for t in names}

    def bump(
        self, tenant: str, tables: Iterable[str], once_id: str | None = None
    ) -> dict[str, int] | None:
        self._guard()
        names = _counted(tables)
        keys = [self.redis_key(tenant)]
        if once_id is not None:
            keys.append(self._once_key(tenant, once_id))
        elif not names:
            return {}
        result: Any = self._slot_retry(
            lambda: self._bump_script(keys=keys, args=[self._once_ttl, *names]))
        if result is None:
            return None
        return {t: int(v) for t, v in zip(names, result, strict=True)}

    def close(self) -> None:
        """Nothing to release: the Redis client belongs to the caller."""
