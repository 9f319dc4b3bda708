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
logged per outage.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reactive_nb.events import PROCESS_ORIGIN, Change
from reactive_nb.stores.bus.base import Callback, _Subscribers
from reactive_nb.stores.bus.client import disconnect, is_cluster, own_client, slot_groups
from reactive_nb.stores.bus.cursor import (
    _READ_COUNT,
    _START,
    _advance,
    _Cursor,
    _cursor_at_end,
    _missing,
    _text,
)
from reactive_nb.stores.bus.entries import entry_fields, parse_entry, stream_key
from reactive_nb.stores.bus.outbox import FIRST_DELAY, MAX_DELAY, Outbox
from reactive_nb.threads import Background

if TYPE_CHECKING:
    import redis

__all__ = ["RedisBus"]

# The cluster form of the reader's MULTI: XINFO and XREAD of streams of one slot, atomic.
# KEYS: the streams; ARGV[i]: the last id read of KEYS[i] ('' : do not read it);
# ARGV[#KEYS + 1]: entries per stream. Returns {XINFO reply or error, XREAD reply or false}
# per stream.
_READ_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local info = redis.pcall('XINFO', 'STREAM', key)
  local read = false
  if ARGV[i] ~= '' then
    read = redis.call('XREAD', 'COUNT', ARGV[#KEYS + 1], 'STREAMS', key, ARGV[i])
  end
  out[i] = {info, read}
end
return out
"""

# The package's logger (tests and users filter on it), not this module's name.
logger = logging.getLogger("reactive_nb.stores.bus")


class RedisBus:
    """A bus shared by every process on one Redis, with a Redis Stream per tenant.

    ``client`` says where Redis is: the bus makes its own connection pool from it (its
    connections are named :attr:`reader_client_name` on the server), used by publishers
    and by one reader thread, ``reactive_nb-bus-redis``, started by the first
    :meth:`follow` (or to send changes held during an outage). ``origin`` identifies
    this process: entries with that origin, and changes this bus published, are not
    delivered again when they come back from Redis. ``maxlen`` bounds each stream
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
        self._read_script = self._redis.register_script(_READ_LUA) if self.cluster else None
        self._on_gap = on_gap
        #: Errors that mean "Redis is unreachable": handled by waiting, never raised.
        self._down_errors: tuple[type[Exception], ...] = (
            redis_module.ConnectionError, redis_module.TimeoutError, OSError)
        self._redis_error = redis_module.RedisError
        self._subscribers = _Subscribers()
        self._wake = threading.Event()  # set by follow() and close(): the reader looks again
        self._reader = Background("bus-redis", self._loop, wake=self._wake.set)
        self._stop = self._reader.stopping
        # Guards everything below. Held only to read or swap these fields, never across
        # Redis calls or callbacks, so publishers and the reader barely meet on it.
        self._lock = threading.Lock()
        self._cursors: dict[str, _Cursor] = {}  # followed tenants
        self._full_check = True  # the reader must look at every followed stream
        self._closed = False
        self._down = False  # inside an outage (one warning each)
        self._outbox = Outbox()  # sent ids, changes held during an outage, back-off

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
        except self._down_errors as exc:
            with self._lock:
                for change in batch:
                    self._outbox.hold(change)
                self._outbox.failed()
                self._start_thread()  # it sends them when Redis is back, even if we go quiet
            self._mark_down("publish", exc)
            return
        except self._redis_error:
            # Redis answered with an error (out of memory, wrong key type...): retrying
            # would not help. Other processes miss these changes; their versions do not.
            logger.exception("could not publish %d change(s) to Redis", len(batch))
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

    def _mark_down(self, where: str, exc: BaseException) -> None:
        with self._lock:
            first = not self._down
            self._down = True
        if first:
            logger.log(
                logging.INFO if self._may_send is not None else logging.WARNING,
                "Redis is unreachable (%s: %s): changes reach this process only, until it is "
                "back", where, str(exc) or type(exc).__name__)

    def _mark_up(self) -> bool:
        with self._lock:
            was_down = self._down
            self._down = False
        if was_down:
            logger.info("Redis bus recovered: sending held changes, resuming followed streams")
        return was_down

    # --- following --------------------------------------------------------------------

    def follow(self, tenant: str) -> None:
        """Receive other processes' changes for ``tenant``: every one published after this
        returns (and none before). Idempotent; ignored once the bus is closed."""
        with self._lock:
            if self._closed or tenant in self._cursors:
                return
        try:
            cursor = self._current_end(tenant)
        except self._down_errors as exc:
            self._mark_down("follow", exc)
            cursor = _Cursor(None, None)
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

    def _current_end(self, tenant: str) -> _Cursor:
        try:
            info = self._redis.xinfo_stream(self._key(tenant))
        except self._redis_error as exc:
            if _missing(exc):
                return _START
            raise
        return _cursor_at_end(info)

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
            tenants = {self._key(t): t for t in cursors}
            todo = [tenants[key] for key in self._wait_for_entries(streams)]
        while todo and not self._stop.is_set():
            todo = self._read(todo)
        return True

    def _wait_for_entries(self, streams: dict[Any, Any]) -> list[str]:
        """Block until some of ``streams`` (key -> last id) have new entries, at most about
        ``block_ms``; the keys of those that have.

        One blocking ``XREAD`` covers the streams of one hash slot only (a cluster refuses
        a multi-key command across slots, even on one node). On one server, or when every
        followed tenant hashes to one slot, that is one read blocking ``block_ms``. On a
        cluster with k slot groups, each group's read blocks ``block_ms / k`` in turn, so
        news waits at most ``block_ms`` as on one server; RedisCluster routes each read to
        the node owning that slot (following MOVED/ASK). This is a bounded rotation, not
        one blocking reader per node: k reads per ``block_ms`` while idle.
        """
        groups = slot_groups(self._redis, streams)
        block = self.block_ms if len(groups) <= 1 else max(1, self.block_ms // len(groups))
        for group in groups:
            reply: Any = self._redis.xread({k: streams[k] for k in group}, count=1,
                                           block=block)
            self._answered()
            keys = [_text(key) for key in _xread_streams(reply)]
            if keys:
                return keys
            if self._stop.is_set() or self._wake.is_set():
                break
        return []

    def _answered(self) -> None:
        """Redis answered the reader: end the outage, if any, and send what it held."""
        if self._mark_up() or self._held_due():
            self._flush()

    def _read(self, tenants: list[str]) -> list[str]:
        """Read new entries of these streams, one transaction per hash slot (on a cluster a
        MULTI holds keys of one slot), deliver them, report gaps; returns the tenants to
        read again."""
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
        streams: dict[Any, Any] = {
            self._key(t): c.last_id for t, c in cursors.items() if c.last_id}
        entries: dict[str, list[tuple[Any, Any]]] = {}
        if self._read_script is not None:
            # A cluster: one script (atomic like MULTI, but routed by redis-py through
            # MOVED and ASK, which a cluster MULTI is not while its slot migrates).
            keys = [self._key(t) for t in cursors]
            script_reply: Any = self._read_script(
                keys=keys, args=[*(streams.get(k) or "" for k in keys), _READ_COUNT])
            self._answered()
            results = [info for info, _ in script_reply]
            for _, read in script_reply:
                entries.update(_xread_streams(read))
        else:
            pipe = self._redis.pipeline(transaction=True)
            for tenant in cursors:
                pipe.xinfo_stream(self._key(tenant))
            if streams:
                pipe.xread(streams, count=_READ_COUNT)
            results = pipe.execute(raise_on_error=False)
            self._answered()
            if streams:
                reply = results[-1]
                if isinstance(reply, Exception):
                    raise reply
                entries = _xread_streams(reply)

        moved: dict[str, tuple[_Cursor, bool, bool, list[Change]]] = {}
        for tenant, info in zip(cursors, results, strict=False):
            if isinstance(info, Exception):
                if not _missing(info):
                    raise info
                info = None
            elif isinstance(info, list):  # a cluster transaction leaves XINFO unparsed
                info = {_text(k): v for k, v in zip(info[::2], info[1::2], strict=False)}
            items = entries.get(self._key(tenant), [])
            cursor, gap, reread = _advance(cursors[tenant], info, [_text(i) for i, _ in items])
            changes = [] if reread else [
                c for c in (parse_entry(self.prefix, tenant, i, f) for i, f in items)
                if c is not None and c.origin != self.origin]
            moved[tenant] = (cursor, gap, reread, changes)
        with self._lock:
            # A tenant unfollowed (or followed again) meanwhile keeps its new cursor.
            moved = {t: m for t, m in moved.items() if self._cursors.get(t) is cursors[t]}
            for tenant, (cursor, *_) in moved.items():
                self._cursors[tenant] = cursor
            echoes = {c.id for m in moved.values() for c in m[3] if c.id in self._outbox.sent}

        again = []
        for tenant, (_, gap, reread, changes) in moved.items():
            for change in changes:
                if change.id not in echoes:
                    self._subscribers.deliver(change)
            if gap:
                self._report_gap(tenant)
            if reread:
                again.append(tenant)
        return again

    def _report_gap(self, tenant: str) -> None:
        logger.info("changes of tenant %r were lost from its stream (gap)", tenant)
        if self._on_gap is None:
            return
        try:
            self._on_gap(tenant)
        except Exception:
            logger.exception("on_gap(%r) failed", tenant)



def _xread_streams(reply: Any) -> dict[str, list[tuple[Any, Any]]]:
    """An ``XREAD`` reply as {stream key: [(entry id, {field: value})]}, whichever shape
    redis-py gave it: a list of [key, entries] (RESP2, the parsed form) or a dict (a
    cluster transaction's reply, whose entries keep their fields as a flat list)."""
    pairs = reply.items() if isinstance(reply, dict) else (reply or ())
    streams: dict[str, list[tuple[Any, Any]]] = {}
    for key, items in pairs:
        entries = []
        for entry_id, fields in items or ():
            if isinstance(fields, list):
                fields = dict(zip(fields[::2], fields[1::2], strict=False))
            entries.append((entry_id, fields))
        streams[_text(key)] = entries
    return streams
