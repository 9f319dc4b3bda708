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

    ``<prefix>:{<tenant>}:done:<key>`` (field ``ok``: 1 or 0; ``MAXLEN 16``, expires
    after a minute without announcements)

in the same script (one stream per key, not per tenant: a follower wakes for its own
key only, not for every other live query of the tenant). A failed run deletes the lease
instead and announces ``ok 0``, so the waiting processes take over at once. Every key
carries the tenant as a hash tag, so the scripts touch one cluster slot.

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reactive_nb.threads import Background

if TYPE_CHECKING:
    import redis

    from reactive_nb.stores.slots import SlotRetry

__all__ = ["DONE_MAXLEN", "DONE_TTL_MS", "FOLLOW_ROUNDS", "LEASE_MS", "MARGIN_MS", "Claim",
           "RedisLeases", "shared_leases"]

logger = logging.getLogger(__name__)

#: Lifetime of a lease without renewal: how long a dead holder delays the others.
LEASE_MS = 5_000
#: Extra time a follower waits past a lease's expiry before claiming it again.
MARGIN_MS = 20
#: A follower follows at most this many leaders for one result, then runs it itself.
FOLLOW_ROUNDS = 2
#: Length bound of a key's ``done`` stream (exact: a tiny stream is cheap to trim).
DONE_MAXLEN = 16
#: A key's ``done`` stream expires after this long without an announcement.
DONE_TTL_MS = 60_000
#: Value of a lease whose run finished and stored its entry.
DONE = b"done"

# KEYS[1]: the lease; KEYS[2]: the key's done stream.
# ARGV[1]: our value ("<token> <expected ms>"); ARGV[2]: lease ms.
# Returns {1} when taken, else {0, holder's value, its PTTL, the stream's last id}: the
# last id is read in the same step as the holder, so the holder's announcement comes after.
_CLAIM_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1}
end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local mark = '0-0'
if #last > 0 then mark = last[1][1] end
return {0, redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]), mark}
"""

# KEYS[1]: the lease; KEYS[2]: the key's done stream.
# ARGV[1]: our value; ARGV[2]: '1' ran (entry stored) or '0' failed; ARGV[3]: how long the
# done marker stays (ms); ARGV[4]: the stream's MAXLEN; ARGV[5]: the stream's TTL (ms).
# The lease changes only if it is still ours; the outcome is announced either way.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '1' then
    redis.call('SET', KEYS[1], 'done', 'PX', ARGV[3])
  else
    redis.call('DEL', KEYS[1])
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], '*', 'ok', ARGV[2])
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
class Claim:
    """The answer to :meth:`RedisLeases.claim`.

    ``value`` is set when the lease is ours. Otherwise ``done`` says a run for these
    versions already finished, or ``holder`` names the run holding it, which expects to
    take ``expected_ms`` (0: unknown) and holds it for ``ttl_ms`` more unless renewed;
    ``mark`` is the id to :meth:`~RedisLeases.wait` from.
    """

    lease: str
    tenant: str
    value: bytes | None = None
    done: bool = False
    holder: bytes | None = None
    expected_ms: int = 0
    ttl_ms: int = 0
    mark: bytes = b"0-0"

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
    """

    def __init__(self, client: redis.Redis, prefix: str = "rnb",
                 lease_ms: int = LEASE_MS, slot_retry: SlotRetry | None = None) -> None:
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

    def claim(self, tenant: str, key: str, definition: int, versions: Mapping[str, int],
              expected_ms: int = 0) -> Claim:
        """Take the lease of (tenant, key, definition, versions), or say who holds it.

        One script call. When taken, the lease is renewed until :meth:`release`.
        Raises redis errors (the caller falls back to running unshared).
        """
        lease = self.lease_key(tenant, key, definition, versions)
        value = f"{uuid.uuid4().hex[:16]} {max(0, int(expected_ms))}".encode()
        reply: Any = self._slot_retry(lambda: self._claim(
            keys=[lease, self.done_key(tenant, key)], args=[value, self.lease_ms]))
        if int(reply[0]) == 1:
            self._hold(lease, value)
            return Claim(lease, tenant, value=value)
        holder, ttl, mark = reply[1], int(reply[2]), reply[3]
        if holder == DONE:
            return Claim(lease, tenant, done=True, mark=mark)
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
        args = [claim.value, "1" if ran else "0", self.lease_ms, DONE_MAXLEN, DONE_TTL_MS]
        self._slot_retry(lambda: self._release(
            keys=[claim.lease, self.done_key(claim.tenant, key)], args=args))

    def wait(self, tenant: str, key: str, after: bytes, timeout: float) -> bool:
        """Block until ``key``'s done stream has an entry after ``after`` (True), or
        ``timeout`` seconds passed (False). Returns False at once once the store is closed.
        Raises redis errors."""
        stream = self.done_key(tenant, key)
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0:
                return False
            try:
                reply: Any = self._redis.xread({stream: after}, count=1,
                                               block=min(left, self._max_block_ms))
            except Exception:
                if self.closed:  # close() disconnected the blocking connection
                    return False
                raise
            if reply:
                return True
        return False

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


def shared_leases(client: Any, bus: object) -> RedisLeases | None:
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
    return RedisLeases(client, prefix=prefix)
