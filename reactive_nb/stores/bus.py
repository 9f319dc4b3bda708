"""Change fan-out: to this process's subscribers, and to every process following a tenant.

A :class:`~reactive_nb.events.Change` published on a bus reaches this process's subscribers
at once, synchronously, in the publishing thread. :class:`RedisBus` also appends it to one
Redis Stream per tenant, which other processes read with a blocking ``XREAD``. Both
implementations share the :class:`Bus` interface and one test suite.

Redis layout. The stream of tenant ``acme`` is ``rnb:{acme}:changes`` (``<prefix>:{<tenant>}``:
the braces are a Redis Cluster hash tag, so one tenant's keys share a slot). An entry has
the fields ``tables`` (comma-separated table names, ``*`` for "every table"), ``origin``
(who captured the write) and, optionally, ``id`` (default: the stream entry id). Any
program can publish a change with two commands, the version counter first so that a
reader that hears the change also sees the new version::

    HINCRBY rnb:{acme}:versions agent 1
    XADD rnb:{acme}:changes MAXLEN ~ 10000 * tables agent origin cron

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
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from reactive_nb.events import ALL_TABLES, PROCESS_ORIGIN, Change
from reactive_nb.threads import Background

if TYPE_CHECKING:
    import redis

__all__ = ["Bus", "Callback", "MemoryBus", "RedisBus"]

logger = logging.getLogger(__name__)

#: A subscriber: called once per change, must return quickly (e.g. enqueue and return).
Callback = Callable[[Change], None]

_FIRST_DELAY = 0.05  # seconds before the first reconnect attempt; doubles up to _MAX_DELAY
_MAX_DELAY = 5.0
_READ_COUNT = 1000  # entries per stream per read: bounds the memory of one read
_SENT_IDS = 4096  # ids of changes this bus published recently, to drop their echo
_UNKNOWN_ORIGIN = "unknown"  # origin of an entry written without one


@runtime_checkable
class Bus(Protocol):
    """Carries changes to subscribers: this process's at once, other processes' if shared."""

    def publish(self, change: Change, *, remote: bool = True) -> None:
        """Deliver to this process's subscribers now, in the caller's thread, then (unless
        ``remote`` is False) to other processes. Never raises because a shared backend is
        unreachable."""
        ...

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback`` for every change from now on; returns the unsubscribe function.

        A callback must be fast; an exception it raises is logged and does not stop
        delivery to the others."""
        ...

    def follow(self, tenant: str) -> None:
        """Also receive other processes' changes for ``tenant`` (idempotent)."""
        ...

    def unfollow(self, tenant: str) -> None:
        """Stop receiving other processes' changes for ``tenant`` (idempotent)."""
        ...

    def close(self) -> None:
        """Stop and join any thread the bus started (idempotent)."""
        ...


class _Subscribers:
    """The callbacks of one bus, each under a token so the same callable may subscribe twice."""

    def __init__(self) -> None:
        # Guards _callbacks and _next only. Delivery copies the callbacks and calls them
        # with the lock released, so a callback may (un)subscribe and a slow one cannot
        # stall subscribe() in another thread.
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callback] = {}
        self._next = 0

    def add(self, callback: Callback) -> Callable[[], None]:
        with self._lock:
            token = self._next
            self._next += 1
            self._callbacks[token] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._callbacks.pop(token, None)

        return unsubscribe

    def deliver(self, change: Change) -> None:
        with self._lock:
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            try:
                callback(change)
            except Exception:
                logger.exception("change subscriber %r failed on %s", callback, change.to_json())


class MemoryBus:
    """The bus of a single process: publish calls the subscribers, nothing else."""

    def __init__(self) -> None:
        self._subscribers = _Subscribers()

    def publish(self, change: Change, *, remote: bool = True) -> None:
        self._subscribers.deliver(change)

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        return self._subscribers.add(callback)

    def follow(self, tenant: str) -> None:
        """Nothing to do: every change of this process is already delivered."""

    def unfollow(self, tenant: str) -> None:
        """Nothing to do (see :meth:`follow`)."""

    def close(self) -> None:
        """Nothing to release; subscribers stay registered."""

    def __enter__(self) -> MemoryBus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(frozen=True)
class _Cursor:
    """Where the reader stands in one followed stream.

    ``last_id``: the last entry id consumed, or the stream's last id when it was followed;
    None when follow() could not reach Redis (the reader starts it later and reports a gap).
    ``added``: the stream's ``entries-added`` counter (Redis >= 7) up to ``last_id``. Entries
    leave a stream from its head, so ``entries-added - length`` entries were trimmed; more
    than ``added`` means some we never read were dropped. None when the server lacks it.
    """

    last_id: str | None
    added: int | None


_START = _Cursor("0-0", 0)


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cursor_at_end(info: Mapping[str, Any]) -> _Cursor:
    added = info.get("entries-added")
    return _Cursor(_text(info["last-generated-id"]), int(added) if added is not None else None)


def _advance(
    cursor: _Cursor, info: Mapping[str, Any] | None, ids: list[str]
) -> tuple[_Cursor, bool, bool]:
    """The cursor after reading entries ``ids`` of a stream, given ``XINFO STREAM`` taken in
    the same transaction (None: the stream does not exist).

    Returns ``(cursor, gap, reread)``: ``gap`` when entries we never read were lost,
    ``reread`` when the stream must be read again from the new cursor (``ids`` ignored).
    """
    if info is None:
        # Vanished (deleted, or Redis restarted empty) after we had read from it: whatever
        # was published since our last read is lost.
        return _START, cursor.last_id not in (None, "0-0"), False
    if cursor.last_id is None:
        return _cursor_at_end(info), True, False
    last_generated = _text(info["last-generated-id"])
    added = info.get("entries-added")
    if _stream_id(last_generated) < _stream_id(cursor.last_id) or (
        added is not None and cursor.added is not None and added < cursor.added
    ):
        # A new stream under the old key: read it from its start.
        return _START, True, True
    first = info.get("first-entry")
    if added is not None and cursor.added is not None:
        trimmed = int(added) - int(info["length"])
        gap = trimmed > cursor.added
        new_added: int | None = max(cursor.added, trimmed) + len(ids)
    else:
        # Redis < 7 has no entries-added: a first entry past ours means some were trimmed
        # (it may also be only ours: a spurious gap costs a re-check, a missed one staleness).
        gap = (first is not None and cursor.last_id != "0-0"
               and _stream_id(_text(first[0])) > _stream_id(cursor.last_id))
        new_added = None
    return _Cursor(ids[-1] if ids else cursor.last_id, new_added), gap, len(ids) >= _READ_COUNT


def _own_client(client: redis.Redis, name: str, block_ms: int) -> redis.Redis:
    """The bus's own client (and connection pool), to the same server as ``client``.

    Same address, database, credentials and TLS; but RESP2 with bytes replies (the parsing
    below relies on their shape), a read timeout longer than a blocking read, a short
    connect timeout, and no retries inside redis-py: the bus handles outages itself
    (back-off, one warning, holding changes, resuming streams, detecting gaps), and a
    publisher never waits on redis-py's own back-off (10 retries, ~4 s, for a client made
    with ``redis.Redis(host=...)``). The blocking reader holds one connection of the pool;
    publishing and follow() use others, so a blocking read never delays them.
    """
    from redis import ConnectionPool, Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    pool = client.connection_pool
    # Entries the pool adds to its own kwargs (registries, maintenance handlers, caches)
    # belong to that pool; those we set ourselves are replaced.
    not_copied = {
        "himport_registry", "maint_notifications_pool_handler", "maint_notifications_config",
        "oss_cluster_maint_notifications_handler", "orig_host_address", "orig_socket_timeout",
        "orig_socket_connect_timeout", "cache", "cache_config", "event_dispatcher",
        "retry", "retry_on_error", "retry_on_timeout", "socket_timeout", "client_name",
        "decode_responses", "protocol", "legacy_responses", "max_connections",
    }
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k not in not_copied}
    connect_timeout = kwargs.get("socket_connect_timeout")
    kwargs["socket_connect_timeout"] = min(float(connect_timeout or 2.0), 2.0)
    reader_pool = ConnectionPool(
        connection_class=pool.connection_class,
        socket_timeout=block_ms / 1000 + 2.0,
        retry=Retry(NoBackoff(), 0),
        client_name=name,
        decode_responses=False,
        protocol=2,
        **kwargs,
    )
    return Redis(connection_pool=reader_pool)


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
    ) -> None:
        import redis as redis_module

        if maxlen < 1 or block_ms < 1:
            raise ValueError(f"maxlen and block_ms must be positive, not {maxlen}, {block_ms}")
        if not hasattr(client, "connection_pool"):
            raise TypeError(f"RedisBus needs a redis.Redis client, not {type(client).__name__}")
        self.prefix = prefix
        self.origin = origin
        self.maxlen = maxlen
        self.block_ms = block_ms
        self.reader_client_name = f"reactive_nb-bus-{uuid.uuid4().hex[:12]}"
        self._redis = _own_client(client, self.reader_client_name, block_ms)
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
        self._pending: dict[tuple[str, str], Change] = {}  # not yet sent, per (tenant, origin)
        self._retry_at: float | None = None  # publish holds changes in _pending until then
        self._retry_delay = _FIRST_DELAY
        self._sent: OrderedDict[str, None] = OrderedDict()  # ids we published, to drop echoes

    def __enter__(self) -> RedisBus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _key(self, tenant: str) -> str:
        return f"{self.prefix}:{{{tenant}}}:changes"

    # --- publishing -------------------------------------------------------------------

    def publish(self, change: Change, *, remote: bool = True) -> None:
        self._subscribers.deliver(change)
        if not change.tables or not remote:
            return
        with self._lock:
            self._sent[change.id] = None
            while len(self._sent) > _SENT_IDS:
                self._sent.popitem(last=False)
            if self._retry_at is not None and time.monotonic() < self._retry_at:
                self._hold(change)  # Redis was down a moment ago: do not wait on it again yet
                return
            batch = self._take_pending()
        batch.append(change)
        self._send(batch)

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        return self._subscribers.add(callback)

    def _hold(self, change: Change) -> None:
        """Keep a change for later, merged with the others of its tenant and origin (lock held)."""
        key = (change.tenant, change.origin)
        held = self._pending.get(key)
        if held is not None:
            change = Change(change.tenant, held.tables | change.tables, change.origin)
            self._sent[change.id] = None
        self._pending[key] = change

    def _take_pending(self) -> list[Change]:
        batch = list(self._pending.values())
        self._pending.clear()
        return batch

    def _xadd(self, target: Any, change: Change) -> None:
        tables = sorted(change.tables)
        if any("," in table for table in tables):
            logger.warning("a table name contains ',': publishing %r as every table", tables)
            tables = [ALL_TABLES]
        target.xadd(
            self._key(change.tenant),
            {"tables": ",".join(tables), "origin": change.origin, "id": change.id},
            maxlen=self.maxlen,
            approximate=True,
        )

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
                    self._hold(change)
                self._retry_at = time.monotonic() + self._retry_delay
                self._retry_delay = min(self._retry_delay * 2, _MAX_DELAY)
                self._start_thread()  # it sends them when Redis is back, even if we go quiet
            self._mark_down("publish", exc)
            return
        except self._redis_error:
            # Redis answered with an error (out of memory, wrong key type...): retrying
            # would not help. Other processes miss these changes; their versions do not.
            logger.exception("could not publish %d change(s) to Redis", len(batch))
            return
        with self._lock:
            self._retry_at = None
            self._retry_delay = _FIRST_DELAY
        if self._mark_up():
            self._flush()

    def _flush(self) -> None:
        """Send the changes held during an outage."""
        with self._lock:
            self._retry_at = None
            batch = self._take_pending()
        if batch:
            self._send(batch)

    def _held_due(self) -> bool:
        """Whether changes held during an outage wait for no back-off delay any more."""
        with self._lock:
            return bool(self._pending) and (
                self._retry_at is None or time.monotonic() >= self._retry_at)

    def _mark_down(self, where: str, exc: BaseException) -> None:
        with self._lock:
            first = not self._down
            self._down = True
        if first:
            logger.warning(
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
            held = len(self._pending)
        self._reader.stop()
        self._redis.connection_pool.disconnect()
        if held:
            logger.warning("closing the Redis bus with changes of %d tenant(s) not sent", held)

    def _loop(self, stop: threading.Event) -> None:
        delay = _FIRST_DELAY
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
                    delay = _FIRST_DELAY
                    last_error = ""
                continue
            with self._lock:
                self._full_check = True  # after reconnecting, look at every stream again
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, _MAX_DELAY)

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
            reply: Any = self._redis.xread(streams, count=1, block=self.block_ms)
            self._answered()
            todo = [tenants[_text(key)] for key, _ in reply or ()]
        while todo and not self._stop.is_set():
            todo = self._read(todo)
        return True

    def _answered(self) -> None:
        """Redis answered the reader: end the outage, if any, and send what it held."""
        if self._mark_up() or self._held_due():
            self._flush()

    def _read(self, tenants: list[str]) -> list[str]:
        """Read new entries of these streams in one transaction with their ``XINFO``, deliver
        them, report gaps; returns the tenants to read again."""
        with self._lock:
            cursors = {t: self._cursors[t] for t in tenants if t in self._cursors}
        if not cursors:
            return []
        pipe = self._redis.pipeline(transaction=True)
        for tenant in cursors:
            pipe.xinfo_stream(self._key(tenant))
        streams: dict[Any, Any] = {
            self._key(t): c.last_id for t, c in cursors.items() if c.last_id}
        if streams:
            pipe.xread(streams, count=_READ_COUNT)
        results = pipe.execute(raise_on_error=False)
        self._answered()
        entries: dict[str, list[tuple[Any, Any]]] = {}
        if streams:
            reply = results[-1]
            if isinstance(reply, Exception):
                raise reply
            entries = {_text(key): list(items) for key, items in reply or ()}

        moved: dict[str, tuple[_Cursor, bool, bool, list[Change]]] = {}
        for tenant, info in zip(cursors, results, strict=False):
            if isinstance(info, Exception):
                if not _missing(info):
                    raise info
                info = None
            items = entries.get(self._key(tenant), [])
            cursor, gap, reread = _advance(cursors[tenant], info, [_text(i) for i, _ in items])
            changes = [] if reread else [
                c for c in (self._parse(tenant, i, f) for i, f in items)
                if c is not None and c.origin != self.origin]
            moved[tenant] = (cursor, gap, reread, changes)
        with self._lock:
            # A tenant unfollowed (or followed again) meanwhile keeps its new cursor.
            moved = {t: m for t, m in moved.items() if self._cursors.get(t) is cursors[t]}
            for tenant, (cursor, *_) in moved.items():
                self._cursors[tenant] = cursor
            echoes = {c.id for m in moved.values() for c in m[3] if c.id in self._sent}

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

    def _parse(self, tenant: str, entry_id: Any, fields: Any) -> Change | None:
        """The change of one stream entry, or None (logged) when it is malformed."""
        try:
            if not isinstance(fields, dict):
                raise ValueError("no fields")
            raw = fields.get(b"tables")
            if raw is None:
                raise ValueError("no 'tables' field")
            tables = frozenset(t.strip() for t in raw.decode().split(",") if t.strip())
            if not tables:
                raise ValueError("empty 'tables' field")
            origin = fields.get(b"origin", b"").decode() or _UNKNOWN_ORIGIN
            change_id = fields.get(b"id", b"").decode() or _text(entry_id)
        except ValueError as exc:  # UnicodeDecodeError is one
            logger.warning("skipping malformed change %s in %s: %s (fields %.200r)",
                           _text(entry_id), self._key(tenant), exc, fields)
            return None
        return Change(tenant, tables, origin, change_id)

    def _report_gap(self, tenant: str) -> None:
        logger.info("changes of tenant %r were lost from its stream (gap)", tenant)
        if self._on_gap is None:
            return
        try:
            self._on_gap(tenant)
        except Exception:
            logger.exception("on_gap(%r) failed", tenant)


def _missing(exc: BaseException) -> bool:
    """Whether a Redis error says the key does not exist (XINFO STREAM on a missing key)."""
    return "no such key" in str(exc).lower()
