"""Leases in Redis: one process runs a shared result, the others wait for its entry.

When a change makes a shared cache entry stale, every kernel following the tenant hears
it and would run the same query. A lease elects one runner per (tenant, key, definition,
versions): :meth:`RedisLeases.claim` is ``SET NX PX`` on

    ``<prefix>:{<tenant>}:lease:<key>:<definition>:<versions digest>``

so a run for newer versions never waits behind a run for older ones (the older one's
entry would be stale for it anyway). The winner runs, stores the entry, and
:meth:`~RedisLeases.release` turns the lease into a short ``done`` marker (so a process
that missed the cache just before the entry was stored does not run again) and announces
the outcome on the key's stream

    ``<prefix>:{<tenant>}:done:<key>`` (field ``ok``: 1 or 0; only the newest
    announcement is kept; expires after a minute without announcements)

in the same script (one stream per key, not per tenant: a follower wakes for its own
key only, not for every other live query of the tenant). When the stored entry is small
(:data:`ANNOUNCED_MAX_BYTES`), the announcement carries a copy of it and the counters of
the tenant's scopes read in the same step (those in the tenant's slot, on a cluster), so a
follower serves it the moment it wakes, under the usual freshness rule, without reading
the entry or the counters back: :class:`Announcement`. A process that finds the lease
already ``done`` gets the same copy from its claim, with the counters read by the claim.
A failed run deletes the lease instead and announces ``ok 0``, so the waiting processes
take over at once. Every key carries the tenant as a hash tag, so the scripts touch one
cluster slot.

A process that finds the lease held records the stream's last id in the same script
(:attr:`Claim.mark`), so an announcement made after it saw the lease cannot be missed,
and blocks on ``XREAD`` from that id (:meth:`~RedisLeases.wait`), on a connection of the
store's own pool: no polling. While a run lasts, one thread per store
(``reactive_nb-lease-renew``, running only while this process holds a lease) renews
every held lease each ``lease_ms / 3``; a holder that dies stops renewing, and its lease
lapses after at most ``lease_ms``.

The policy of following (how long to wait, when to take over) is the caller's:
:meth:`reactive_nb.live.functions.ReactiveFunction.fetch`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reactive_nb.stores.bus.read import xread_streams
from reactive_nb.stores.versions import RUN_ID_LUA
from reactive_nb.threads import Background

if TYPE_CHECKING:
    import redis

    from reactive_nb.stores.cache.base import CacheEntry
    from reactive_nb.stores.cache.redis import RedisCache
    from reactive_nb.stores.slots import SlotRetry
    from reactive_nb.stores.versions import RedisVersions

__all__ = ["ANNOUNCED_MAX_BYTES", "DONE_MAXLEN", "DONE_TTL_MS", "FOLLOW_ROUNDS", "LEASE_MS",
           "MARGIN_MS", "Announcement", "Claim", "RedisLeases", "shared_leases"]

logger = logging.getLogger(__name__)

#: Lifetime of a lease without renewal: how long a dead holder delays the others.
LEASE_MS = 5_000
#: Extra time a follower waits past a lease's expiry before claiming it again.
MARGIN_MS = 20
#: A follower follows at most this many leaders for one result, then runs it itself.
FOLLOW_ROUNDS = 2
#: Length bound of a key's ``done`` stream. A waiter only needs to know that an
#: announcement came after the id it saw, and the newest is the one worth serving; one
#: entry also bounds the copies of entries an announcement carries to one per key.
DONE_MAXLEN = 1
#: An announcement carries a copy of the entry its run stored when the entry's Arrow
#: payload is at most this large (larger ones are read back from the cache: one more round
#: trip, which their transfer outweighs anyway).
ANNOUNCED_MAX_BYTES = 64 * 1024
#: A key's ``done`` stream expires after this long without an announcement.
DONE_TTL_MS = 60_000
#: Value of a lease whose run finished and stored its entry.
DONE = b"done"

# Appends to ``out`` the server's run_id (the counters' epoch) and the counters of
# KEYS[first..] as 'counters:<scope>' fields (HGETALL's flat list as JSON), the scope of
# KEYS[i] being ARGV[i - first + first_arg].
_COUNTERS_LUA = f"""
local function counters(out, first, first_arg)
  out[#out + 1] = 'run_id'
  out[#out + 1] = {RUN_ID_LUA} or ''
  for i = first, #KEYS do
    out[#out + 1] = 'counters:' .. ARGV[i - first + first_arg]
    out[#out + 1] = cjson.encode(redis.call('HGETALL', KEYS[i]))
  end
end
"""

# KEYS[1]: the lease; KEYS[2]: the key's done stream; KEYS[3..]: counters hashes.
# ARGV[1]: our value ("<token> <expected ms>"); ARGV[2]: lease ms; ARGV[3..]: the scope of
# each KEYS[3..].
# Returns {1} when taken, else {0, holder's value, its PTTL, the stream's last id} and,
# when the holder is 'done' and the newest announcement carries an entry, that copy's
# fields with the counters read now: the last id is read in the same step as the holder,
# so the holder's announcement comes after.
_CLAIM_LUA = _COUNTERS_LUA + """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1}
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local mark = '0-0'
if #last > 0 then mark = last[1][1] end
local holder = redis.call('GET', KEYS[1])
local reply = {0, holder, redis.call('PTTL', KEYS[1]), mark}
if holder == 'done' and #last > 0 then
  local fields, copy = last[1][2], {}
  for i = 1, #fields, 2 do
    if fields[i] == 'ok' or fields[i] == 'meta' or fields[i] == 'arrow' then
      copy[#copy + 1] = fields[i]
      copy[#copy + 1] = fields[i + 1]
    end
  end
  if #copy == 6 then counters(copy, 3, 3) end
  reply[5] = copy
end
return reply
"""

# KEYS[1]: the lease; KEYS[2]: the key's done stream; KEYS[3] (optional): the entry's hash;
# KEYS[4..]: counters hashes.
# ARGV[1]: our value; ARGV[2]: '1' ran (entry stored) or '0' failed; ARGV[3]: how long the
# done marker stays (ms); ARGV[4]: the stream's MAXLEN; ARGV[5]: the stream's TTL (ms);
# ARGV[6]: the largest Arrow payload copied into the announcement; ARGV[7..]: the scope of
# each KEYS[4..].
# The lease changes only if it is still ours; the outcome is announced either way, with a
# copy of the entry and the counters read in the same step when it ran and is small.
_RELEASE_LUA = _COUNTERS_LUA + """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '1' then
    redis.call('SET', KEYS[1], 'done', 'PX', ARGV[3])
  else
    redis.call('DEL', KEYS[1])
  end
end
local fields = {'ok', ARGV[2]}
if ARGV[2] == '1' and #KEYS >= 3 then
  local size = redis.call('HSTRLEN', KEYS[3], 'arrow')
  if size > 0 and size <= tonumber(ARGV[6]) then
    local entry = redis.call('HMGET', KEYS[3], 'meta', 'arrow')
    if entry[1] and entry[2] then
      fields[3], fields[4], fields[5], fields[6] = 'meta', entry[1], 'arrow', entry[2]
      counters(fields, 4, 7)
    end
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], '*', unpack(fields))
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 1
"""

# KEYS[1]: the lease; ARGV[1]: our value; ARGV[2]: lease ms. 1 if still ours, else 0.
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


@dataclass(frozen=True)
class Announcement:
    """A run's outcome as announced on its key's stream (or found by a claim).

    ``entry``: a copy of the entry hash's fields (``meta``, ``arrow``) the run stored, when
    small enough; ``counters``: scope -> the counters (with their epoch) read in the same
    step as that copy, for the scopes the script could reach. A process serves the copy
    only if :meth:`cached` finds it fresh; otherwise it reads the cache as usual.
    """

    ok: bool
    entry: Mapping[str, bytes] | None = None
    counters: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def cached(self, now: float,
               valid: Callable[[Mapping[str, int]], bool]) -> CacheEntry | None:
        """The copied entry as of ``now`` if ``valid`` (decoded only then); None if there
        is no copy, it expired, it is not valid or it is unreadable."""
        from reactive_nb.stores.cache.arrow import CorruptEntry
        from reactive_nb.stores.cache.redis import entry_from_fields

        if self.entry is None:
            return None
        try:
            return entry_from_fields(self.entry, now, valid)
        except CorruptEntry as exc:
            logger.debug("unreadable entry in an announcement (%s): read from the cache", exc)
            return None


@dataclass(frozen=True)
class Claim:
    """The answer to :meth:`RedisLeases.claim`.

    ``value`` is set when the lease is ours. Otherwise ``done`` says a run for these
    versions already finished (``announcement``: its copy of the entry, if any, with the
    counters read by the claim), or ``holder`` names the run holding it, which expects to
    take ``expected_ms`` (0: unknown) and holds it for ``ttl_ms`` more unless renewed;
    ``mark`` is the id to :meth:`~RedisLeases.wait` from. ``scopes``: the counter scopes
    whose values a release announces.
    """

    lease: str
    tenant: str
    value: bytes | None = None
    done: bool = False
    holder: bytes | None = None
    expected_ms: int = 0
    ttl_ms: int = 0
    mark: bytes = b"0-0"
    announcement: Announcement | None = None
    scopes: tuple[str, ...] = ()

    @property
    def ours(self) -> bool:
        return self.value is not None


def versions_digest(versions: Mapping[str, int]) -> str:
    """A short stable digest of recorded versions (part of a lease's name)."""
    payload = json.dumps(sorted(versions.items()), separators=(",", ":"))
    return hashlib.sha1(payload.encode(), usedforsecurity=False).hexdigest()[:16]


class RedisLeases:
    """Leases and completion announcements in Redis, for every process sharing a prefix.

    ``client`` says where Redis is; the store makes its own connection pool from it
    (connections named ``reactive_nb-lease-<hex>``), shared by the claims, the renewals
    and the blocking waits (each wait holds one connection while it blocks). ``lease_ms``
    may be lowered after construction (tests do), not raised past the value given here.
    A claim or release (two keys of one slot) refused because that slot is being moved
    between cluster nodes is run again by ``slot_retry`` (:mod:`reactive_nb.stores.slots`).
    With the store's ``cache`` and ``versions``, announcements carry a copy of small entries
    and the counters read with it (see :class:`Announcement`).
    """

    def __init__(self, client: redis.Redis, prefix: str = "rnb",
                 lease_ms: int = LEASE_MS, slot_retry: SlotRetry | None = None,
                 cache: RedisCache | None = None,
                 versions: RedisVersions | None = None) -> None:
        from reactive_nb.stores.bus.client import is_cluster, own_client
        from reactive_nb.stores.slots import SlotRetry

        if lease_ms < 3:
            raise ValueError(f"lease_ms must be at least 3, not {lease_ms}")
        self.prefix = prefix
        self.lease_ms = lease_ms
        self._max_block_ms = lease_ms + MARGIN_MS
        self.client_name = f"reactive_nb-lease-{uuid.uuid4().hex[:12]}"
        self._redis = own_client(client, self.client_name, self._max_block_ms)
        self._cluster = is_cluster(self._redis)
        self._claim = self._redis.register_script(_CLAIM_LUA)
        self._release = self._redis.register_script(_RELEASE_LUA)
        self._renew = self._redis.register_script(_RENEW_LUA)
        self._slot_retry = slot_retry or SlotRetry()
        self._cache = cache
        self._versions = versions
        # Guards _held, _renewer and closed. Held for dict operations and for creating
        # (not joining) the renewer thread, never while talking to Redis.
        self._lock = threading.Lock()
        self._held: dict[str, bytes] = {}  # lease key -> our value, while we run
        self._renewer: Background | None = None
        self.closed = False

    # -- names -----------------------------------------------------------------------------

    def lease_key(self, tenant: str, key: str, definition: int,
                  versions: Mapping[str, int]) -> str:
        return (f"{self.prefix}:{{{tenant}}}:lease:{key}:{definition:x}:"
                f"{versions_digest(versions)}")

    def done_key(self, tenant: str, key: str) -> str:
        return f"{self.prefix}:{{{tenant}}}:done:{key}"

    # -- the protocol ----------------------------------------------------------------------

    def _reachable(self, tenant: str, scopes: tuple[str, ...]) -> tuple[str, ...]:
        """The scopes whose counters a script on ``tenant``'s keys may read: all on one
        server, the tenant's own on a cluster (other scopes live in other slots)."""
        if self._versions is None:
            return ()
        return tuple(s for s in scopes if not self._cluster or s == tenant)

    def claim(self, tenant: str, key: str, definition: int, versions: Mapping[str, int],
              expected_ms: int = 0, scopes: tuple[str, ...] = ()) -> Claim:
        """Take the lease of (tenant, key, definition, versions), or say who holds it.

        One script call. When taken, the lease is renewed until :meth:`release`.
        ``scopes``: the counter scopes a result of ``tenant`` records, read with a copy of
        the entry when the lease is found done, and announced by :meth:`release`.
        Raises redis errors (the caller falls back to running unshared).
        """
        lease = self.lease_key(tenant, key, definition, versions)
        value = f"{uuid.uuid4().hex[:16]} {max(0, int(expected_ms))}".encode()
        reach = self._reachable(tenant, scopes)
        keys = [lease, self.done_key(tenant, key), *self._counter_keys(reach)]
        reply: Any = self._slot_retry(lambda: self._claim(
            keys=keys, args=[value, self.lease_ms, *reach]))
        if int(reply[0]) == 1:
            self._hold(lease, value)
            return Claim(lease, tenant, value=value, scopes=scopes)
        holder, ttl, mark = reply[1], int(reply[2]), reply[3]
        if holder == DONE:
            found = self._announcement(reply[4]) if len(reply) > 4 else None
            return Claim(lease, tenant, done=True, mark=mark, announcement=found)
        expected = 0
        if isinstance(holder, bytes) and b" " in holder:
            try:
                expected = int(holder.rsplit(b" ", 1)[1])
            except ValueError:
                expected = 0
        # PTTL -2/-1 (gone, no expiry) cannot follow a failed SET NX PX in one script;
        # clamp anyway so a waiter never blocks longer than a lease.
        ttl = ttl if 0 <= ttl <= self.lease_ms else self.lease_ms
        return Claim(lease, tenant, holder=holder, expected_ms=expected, ttl_ms=ttl, mark=mark)

    def release(self, claim: Claim, key: str, ran: bool) -> None:
        """Give back a lease we hold and announce the outcome on the key's stream.

        ``ran``: the run finished (its entry stored, or too large to store); the lease
        becomes a ``done`` marker for ``lease_ms``. Otherwise the run failed: the lease is
        deleted so another process takes over at once. Raises redis errors.
        """
        if claim.value is None:
            raise ValueError("release() of a lease this process does not hold")
        self._unhold(claim.lease)
        keys = [claim.lease, self.done_key(claim.tenant, key)]
        args: list[Any] = [claim.value, "1" if ran else "0", self.lease_ms, DONE_MAXLEN,
                           DONE_TTL_MS, ANNOUNCED_MAX_BYTES]
        if ran and self._cache is not None:  # announce a copy of the entry just stored
            reach = self._reachable(claim.tenant, claim.scopes)
            keys += [self._cache.redis_key(claim.tenant, key), *self._counter_keys(reach)]
            args += reach
        self._slot_retry(lambda: self._release(keys=keys, args=args))

    def wait(self, tenant: str, key: str, after: bytes,
             timeout: float) -> Announcement | None:
        """Block until ``key``'s done stream has an entry after ``after`` (the newest
        announcement), or ``timeout`` seconds passed (None). Returns None at once once the
        store is closed. Raises redis errors."""
        stream = self.done_key(tenant, key)
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0:
                return None
            try:
                reply: Any = self._redis.xread({stream: after}, count=1,
                                               block=min(left, self._max_block_ms))
            except Exception:
                if self.closed:  # close() disconnected the blocking connection
                    return None
                raise
            for entries in xread_streams(reply).values():
                if entries:
                    return self._announcement(entries[-1][1])
        return None

    def _counter_keys(self, scopes: tuple[str, ...]) -> list[str]:
        versions = self._versions
        return [versions.redis_key(scope) for scope in scopes] if versions is not None else []

    def _announcement(self, fields: Any) -> Announcement:
        """An announcement from its stream fields (a dict, or a script's flat list)."""
        if isinstance(fields, list):
            fields = dict(zip(fields[::2], fields[1::2], strict=False))
        named = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in fields.items()}
        ok = named.get("ok") in (b"1", "1")
        if not ok or "meta" not in named or "arrow" not in named or self._versions is None:
            return Announcement(ok)
        run_id = named.get("run_id") or None
        counters: dict[str, dict[str, int]] = {}
        for name, raw in named.items():
            if name.startswith("counters:"):
                flat = json.loads(raw)
                flat = flat if isinstance(flat, list) else []  # an empty hash encodes as {}
                counters[name.removeprefix("counters:")] = self._versions.counters_of(run_id,
                                                                                      flat)
        return Announcement(True, {"meta": named["meta"], "arrow": named["arrow"]}, counters)

    # -- renewal ---------------------------------------------------------------------------

    def _hold(self, lease: str, value: bytes) -> None:
        with self._lock:
            self._held[lease] = value
            renewer = None
            if self._renewer is None and not self.closed:
                renewer = self._renewer = Background("lease-renew", self._renew_loop)
        if renewer is not None:
            renewer.start()

    def _unhold(self, lease: str) -> None:
        """Forget a lease; the renewer ends when none is left (a new one starts later)."""
        with self._lock:
            self._held.pop(lease, None)
            renewer = None
            if not self._held and self._renewer is not None:
                renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.stopping.set()  # not joined: it may be inside a renewal call

    def _renew_loop(self, stopping: threading.Event) -> None:
        """Every ``lease_ms / 3``, renew every lease this process holds; ends when none is."""
        while not stopping.wait(self.lease_ms / 3000):
            try:
                if not self.renew_now():
                    return
            except Exception as exc:  # Redis down: the run goes on, the lease may lapse
                logger.debug("renewing leases failed: %s", exc)

    def renew_now(self) -> int:
        """Renew every lease this process holds, in one pipeline (the renewer's step, also
        callable from tests); returns how many were held. A lease found taken by someone
        else (held past its expiry) is logged. Raises redis errors."""
        with self._lock:
            held = dict(self._held)
        if not held:
            return 0
        if self._cluster:
            # A cluster pipeline cannot carry scripts (redis-py refuses EVALSHA in one):
            # one call per lease, each routed to the node owning its tenant's slot.
            results = [self._renew(keys=[lease], args=[value, self.lease_ms])
                       for lease, value in held.items()]
        else:
            pipe = self._redis.pipeline(transaction=False)
            for lease, value in held.items():
                self._renew(keys=[lease], args=[value, self.lease_ms], client=pipe)
            results = pipe.execute()
        lost = [lease for lease, ok in zip(held, results, strict=True) if not ok]
        with self._lock:
            lost = [lease for lease in lost if lease in self._held]
        if lost:
            logger.warning("lost the lease of %s (held past its expiry): another process may "
                           "run the same query", lost)
        return len(held)

    def close(self) -> None:
        """Stop the renewer and wake blocked waits (idempotent)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.stop()
        from reactive_nb.stores.bus.client import disconnect

        disconnect(self._redis)


def shared_leases(client: Any, bus: object, cache: RedisCache | None = None,
                  versions: RedisVersions | None = None) -> RedisLeases | None:
    """The lease store of a ReactiveDB whose stores are in Redis (one server or a
    ``RedisCluster``: every lease script touches one tenant's slot), under its bus's key
    prefix; None without Redis (results are not shared, so there is nothing to elect) or
    with a client whose connections cannot be copied (neither ``redis.Redis`` nor
    ``RedisCluster``)."""
    from reactive_nb.stores.bus.client import is_cluster

    prefix = getattr(bus, "prefix", None)
    if client is None or not isinstance(prefix, str) or not (
            hasattr(client, "connection_pool") or is_cluster(client)):
        return None
    return RedisLeases(client, prefix=prefix, cache=cache, versions=versions)
