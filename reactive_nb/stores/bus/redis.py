"""The bus shared by every process on one Redis: one Redis Stream per tenant.

The stream layout and entry fields are in :mod:`reactive_nb.stores.bus.entries`.
Delivery across processes is at least once (duplicates are harmless: a change only marks
results stale). The reader remembers the last entry it read in each stream and resumes
from there after a disconnect. When entries it never read are gone -- trimmed away by
``MAXLEN`` while it lagged, or lost with the stream when Redis restarted without
persistence -- it calls ``on_gap(tenant)``, so the caller can re-check the versions of
everything that tenant watches. Redis being down never makes :meth:`RedisBus.publish`
raise: subscribers in this process still get every change, the changes for other
processes are kept (merged per tenant) and sent when Redis is back, and one warning is
logged per outage. On a Redis Cluster the followed streams are read by one thread per
master (:mod:`reactive_nb.stores.bus.cluster`); a slot moving or a master failing over
delays their changes, never loses them.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reactive_nb.events import PROCESS_ORIGIN, Change
from reactive_nb.stores.bus.base import Callback, Subscribers
from reactive_nb.stores.bus.client import disconnect, is_cluster, own_client, slot_groups
from reactive_nb.stores.bus.cluster import NodeReaders, ReaderStats, down_errors
from reactive_nb.stores.bus.cursor import Cursor
from reactive_nb.stores.bus.entries import entry_fields, stream_key
from reactive_nb.stores.bus.outbox import FIRST_DELAY, MAX_DELAY, Outbox
from reactive_nb.stores.bus.read import READ_LUA, read_slot, stream_end, xread_streams
from reactive_nb.stores.slots import slot_moving
from reactive_nb.threads import Background

if TYPE_CHECKING:
    import redis

__all__ = ["RedisBus"]

# The package's logger (tests and users filter on it), not this module's name.
logger = logging.getLogger("reactive_nb.stores.bus")


class RedisBus:
    """A bus shared by every process on one Redis, with a Redis Stream per tenant.

    ``client`` says where Redis is: the bus makes its own connection pool from it (its
    connections are named :attr:`reader_client_name` on the server), used by publishers
    and by one reader thread, ``reactive_nb-bus-redis``, started by the first
    :meth:`follow` (or to send changes held during an outage); on a cluster, that thread
    hands the followed streams to one reader thread per master. ``origin`` identifies this
    process: entries with that origin, and changes this bus published, are not delivered
    again when they come back from Redis. ``maxlen`` bounds each stream
    (approximately); ``on_gap(tenant)`` is called, on the reader thread, when changes of
    ``tenant`` were lost; ``block_ms`` is the longest blocking read, hence about how long
    :meth:`close` and picking up a newly followed tenant take.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "rnb",
        origin: str = PROCESS_ORIGIN,
        maxlen: int = 10_000,
        on_gap: Callable[[str], None] | None = None,
        block_ms: int = 500,
        may_send: Callable[[], bool] | None = None,
    ) -> None:
        import redis as redis_module

        #: Asked before a publisher's thread talks to Redis (the stores' circuit breaker):
        #: while it says no, changes are held for the reader thread to send, so a hung
        #: Redis never delays a write. Given by a ReactiveDB, whose StoreHealth also owns
        #: the outage warning: the bus then reports outages at INFO only.
        self._may_send = may_send
        if maxlen < 1 or block_ms < 1:
            raise ValueError(f"maxlen and block_ms must be positive, not {maxlen}, {block_ms}")
        if not (hasattr(client, "connection_pool") or is_cluster(client)):
            raise TypeError("RedisBus needs a redis.Redis or RedisCluster client, not "
                            f"{type(client).__name__}")
        self.prefix = prefix
        self.origin = origin
        self.maxlen = maxlen
        self.block_ms = block_ms
        self.reader_client_name = f"reactive_nb-bus-{uuid.uuid4().hex[:12]}"
        self._redis = own_client(client, self.reader_client_name, block_ms)
        self.cluster = is_cluster(self._redis)
        self._read_script = self._redis.register_script(READ_LUA) if self.cluster else None
        self._on_gap = on_gap
        #: Errors that mean "Redis is unreachable": handled by waiting, never raised. On a
        #: cluster also CLUSTERDOWN and a slot map that cannot be loaded (a failover).
        self._down_errors = down_errors(self.cluster)
        self._redis_error = redis_module.RedisError
        self._subscribers = Subscribers()
        self._wake = threading.Event()  # set by follow() and close(): the reader looks again
        self._reader = Background("bus-redis", self._loop, wake=self._wake.set)
        self._stop = self._reader.stopping
        # Guards everything below. Held only to read or swap these fields, never across
        # Redis calls or callbacks, so publishers and the reader barely meet on it.
        self._lock = threading.Lock()
        self._cursors: dict[str, Cursor] = {}  # followed tenants
        self._full_check = True  # the reader must look at every followed stream
        self._closed = False
        # Who cannot reach Redis now: "redis" (publishing, or the reader of one server) and,
        # on a cluster, each master whose reader cannot reach it. The bus is inside an
        # outage (one warning, one recovery message) while it is not empty.
        self._down: set[str] = set()
        self._outbox = Outbox()  # sent ids, changes held during an outage, back-off
        #: The readers of a cluster, one per master (None on one server).
        self._nodes = NodeReaders(self, self._redis) if self.cluster else None

    def __enter__(self) -> RedisBus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _key(self, tenant: str) -> str:
        return stream_key(self.prefix, tenant)

    # --- publishing -------------------------------------------------------------------

    def publish(self, change: Change, *, remote: bool = True) -> None:
        self._subscribers.deliver(change)
        if not change.tables or not remote:
            return
        with self._lock:
            self._outbox.record(change)
            gated = self._may_send is not None and not self._may_send()
            if gated or self._outbox.backing_off():
                self._outbox.hold(change)  # Redis is (or was just) down: do not wait on it
                if gated:
                    self._start_thread()  # the reader sends it once Redis answers
                return
            batch = self._outbox.take()
        batch.append(change)
        self._send(batch)

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        return self._subscribers.add(callback)

    def _xadd(self, target: Any, change: Change) -> None:
        target.xadd(self._key(change.tenant), entry_fields(change),
                    maxlen=self.maxlen, approximate=True)

    def _send(self, batch: list[Change]) -> None:
        try:
            if len(batch) == 1:
                self._xadd(self._redis, batch[0])
            else:
                pipe = self._redis.pipeline(transaction=False)
                for change in batch:
                    self._xadd(pipe, change)
                pipe.execute()
        except Exception as exc:
            if not (isinstance(exc, self._down_errors) or slot_moving(exc)):
                if not isinstance(exc, self._redis_error):
                    raise
                # Redis answered with an error (out of memory, wrong key type...): retrying
                # would not help. Other processes miss these changes, not their versions.
                logger.exception("could not publish %d change(s) to Redis", len(batch))
                return
            with self._lock:
                for change in batch:
                    self._outbox.hold(change)
                self._outbox.failed()
                self._start_thread()  # it sends them when Redis is back, even if we go quiet
            self._mark_down("publish", exc)
            return
        with self._lock:
            self._outbox.succeeded()
        if self._mark_up():
            self._flush()

    def _flush(self) -> None:
        """Send the changes held during an outage."""
        with self._lock:
            self._outbox.retry_at = None
            batch = self._outbox.take()
        if batch:
            self._send(batch)

    def _held_due(self) -> bool:
        """Whether changes held during an outage wait for no back-off delay any more."""
        with self._lock:
            return self._outbox.due()

    def _mark_down(self, where: str, exc: BaseException, source: str = "redis") -> None:
        with self._lock:
            first = not self._down
            self._down.add(source)
        if first:
            logger.log(
                logging.INFO if self._may_send is not None else logging.WARNING,
                "Redis is unreachable (%s: %s): changes reach this process only, until it is "
                "back", where, str(exc) or type(exc).__name__)

    def _mark_up(self, source: str = "redis") -> bool:
        """``source`` reaches Redis (again); True when that ended the outage."""
        with self._lock:
            was_down = source in self._down
            self._down.discard(source)
            recovered = was_down and not self._down
        if recovered:
            logger.info("Redis bus recovered: sending held changes, resuming followed streams")
        return recovered

    # --- following --------------------------------------------------------------------

    def follow(self, tenant: str) -> None:
        """Receive other processes' changes for ``tenant``: every one published after this
        returns (and none before). Idempotent; ignored once the bus is closed."""
        with self._lock:
            if self._closed or tenant in self._cursors:
                return
        try:
            cursor = stream_end(self._redis, self._key(tenant))
        except self._down_errors as exc:
            self._mark_down("follow", exc)
            cursor = Cursor(None, None)
        with self._lock:
            if self._closed or tenant in self._cursors:
                return
            self._cursors[tenant] = cursor
            if cursor.last_id is None:
                self._full_check = True
            self._start_thread()
        self._wake.set()

    def unfollow(self, tenant: str) -> None:
        with self._lock:
            self._cursors.pop(tenant, None)

    @property
    def followed(self) -> frozenset[str]:
        """The tenants whose streams this process reads now."""
        with self._lock:
            return frozenset(self._cursors)

    def _cursor_snapshot(self) -> dict[str, Cursor]:
        """The followed tenants and where the reader stands in each (a copy)."""
        with self._lock:
            return dict(self._cursors)

    @property
    def down(self) -> bool:
        """Whether the bus is inside an outage: publishing, or reading some stream, fails."""
        with self._lock:
            return bool(self._down)

    def reader_stats(self) -> list[ReaderStats]:
        """On a cluster, the reader of each master (one blocking read per round at most);
        empty on one server."""
        return self._nodes.stats() if self._nodes is not None else []

    # --- the reader thread ------------------------------------------------------------

    def _start_thread(self) -> None:
        """Start the reader thread once (lock held); it reads followed streams and sends
        changes held during an outage."""
        if not self._closed:
            self._reader.start()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            held = len(self._outbox.pending)
        self._reader.stop()
        if self._nodes is not None:
            self._nodes.close()
        disconnect(self._redis)
        if held:
            logger.warning("closing the Redis bus with changes of %d tenant(s) not sent", held)

    def _loop(self, stop: threading.Event) -> None:
        delay = FIRST_DELAY
        last_error = ""
        while not self._stop.is_set():
            try:
                talked = self._step()
            except self._down_errors as exc:
                self._mark_down("read", exc)
            except Exception as exc:
                # Not an outage (e.g. a followed key holds something else than a stream):
                # log each distinct error once and keep trying at the back-off pace.
                if repr(exc) != last_error:
                    logger.exception("the Redis bus reader failed; retrying")
                last_error = repr(exc)
            else:
                if talked:
                    delay = FIRST_DELAY
                    last_error = ""
                continue
            with self._lock:
                self._full_check = True  # after reconnecting, look at every stream again
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, MAX_DELAY)

    def _step(self) -> bool:
        """One round of the reader; returns whether it talked to Redis."""
        if self._nodes is not None:
            return self._step_cluster(self._nodes)
        self._wake.clear()
        with self._lock:
            cursors = dict(self._cursors)
            full, self._full_check = self._full_check, False
        if not cursors:
            if self._held_due():
                self._redis.ping()  # raises while Redis is still down: the loop backs off
                self._answered()
                return True
            self._wake.wait(self.block_ms / 1000)
            return False
        if full:
            # Every stream, not only those with new entries: one may have vanished.
            todo = list(cursors)
        else:
            # Wait for new entries, but only to learn which streams have some: the entries
            # themselves are read by _read, atomically with the stream's counters.
            streams: dict[Any, Any] = {
                self._key(t): c.last_id for t, c in cursors.items() if c.last_id}
            if not streams:  # only streams follow() could not start: a full round does
                with self._lock:
                    self._full_check = True
                return False
            reply: Any = self._redis.xread(streams, count=1, block=self.block_ms)
            self._answered()
            tenants = {self._key(t): t for t in cursors}
            todo = [tenants[key] for key in xread_streams(reply)]
        while todo and not self._stop.is_set():
            todo = self._read(todo)
        return True

    def _step_cluster(self, nodes: NodeReaders) -> bool:
        """One round of the bus's thread on a cluster: hand the followed streams to the
        node readers, send held changes when due, wait ``block_ms`` or a follow()."""
        self._wake.clear()
        nodes.regroup(list(self._cursor_snapshot()))
        talked = self._held_due()
        if talked:
            self._flush()  # holds them again, and backs off, if Redis is still down
        self._wake.wait(self.block_ms / 1000)
        return talked

    def _answered(self, source: str = "redis") -> None:
        """Redis answered a reader: end the outage, if any, and send what it held."""
        if self._mark_up(source) or self._held_due():
            self._flush()

    def _read(self, tenants: list[str]) -> list[str]:
        """Read new entries of these streams, one transaction per hash slot, deliver them,
        report gaps; returns the tenants to read again."""
        if not self.cluster:
            return self._read_slot(tenants)
        by_key = {self._key(t): t for t in tenants}
        again: list[str] = []
        for group in slot_groups(self._redis, by_key):
            again += self._read_slot([by_key[k] for k in group])
        return again

    def _read_slot(self, tenants: list[str]) -> list[str]:
        """Read new entries of these streams (one hash slot) in one transaction with their
        ``XINFO``, deliver them, report gaps; returns the tenants to read again."""
        with self._lock:
            cursors = {t: self._cursors[t] for t in tenants if t in self._cursors}
        if not cursors:
            return []
        found = read_slot(self._redis, self._read_script, self.prefix, self.origin, cursors)
        if not self.cluster:  # a cluster's node readers say which node answered
            self._answered()
        with self._lock:
            # A tenant unfollowed (or followed again) meanwhile keeps its new cursor; so
            # does one another reader read first (a cluster's readers while regrouping).
            found = [f for f in found if self._cursors.get(f.tenant) is cursors[f.tenant]]
            for f in found:
                self._cursors[f.tenant] = f.cursor
            echoes = {c.id for f in found for c in f.changes if c.id in self._outbox.sent}

        again = []
        for f in found:
            for change in f.changes:
                if change.id not in echoes:
                    self._subscribers.deliver(change)
            if f.gap:
                self._report_gap(f.tenant)
            if f.reread:
                again.append(f.tenant)
        return again

    def _report_gap(self, tenant: str) -> None:
        logger.info("changes of tenant %r were lost from its stream (gap)", tenant)
        if self._on_gap is None:
            return
        try:
            self._on_gap(tenant)
        except Exception:
            logger.exception("on_gap(%r) failed", tenant)

