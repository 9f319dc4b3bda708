"""Reading the followed streams on a Redis Cluster: one blocking reader per master node.

No single command can wait on streams of several slots, even slots of one node. Measured
on the local cluster of the tests (redis-server 7.0.15, 3 masters), on a plain connection
to one master and two streams in two slots that master owns: ``XREAD``, ``XREAD BLOCK``
and a ``MULTI`` of one ``XREAD`` per slot are all refused with ``CROSSSLOT``, and so is a
script declaring both keys. A script flagged ``allow-cross-slot-keys`` may touch several
slots of its node (one slot per ``redis.call``), but a blocking command never blocks
inside a script. Waiting on every followed slot at once would take keyspace notifications
(a server setting we cannot assume) or a doorbell key every writer rings (not what a raw
``XADD`` does).

So each master owning the slot of a followed stream gets one thread,
``reactive_nb-bus-redis-<host>:<port>`` (a :class:`NodeReader`), that repeats a round:

1. read in full (``XINFO`` + entries, gaps detected) every stream it has not read since
   it was given it -- after it started, after an error, after the stream's slot moved to
   its node;
2. otherwise probe: one pipeline (one round trip) of non-blocking ``XREAD COUNT 1``, one
   per slot, for every slot but one;
3. if none has news, one ``XREAD BLOCK block_ms`` on the streams of the remaining slot:
   that of the tenant whose news it saw last (the likeliest to change again), else any;
4. read the streams with news, one atomic script per slot (:mod:`.read`).

At most one blocking read per node and round, and as many threads as masters, however
many tenants are followed: news on the slot it blocks on arrives at once, news elsewhere
within about ``block_ms`` (the next probe). Every command is routed by key through the
``RedisCluster`` client, so a stale grouping is slower, never wrong: MOVED and ASK are
followed, and two readers reading one stream meanwhile cannot both deliver (the bus keeps
the cursor of the first). :class:`NodeReaders`, driven by the bus's own thread, groups
the streams by the master owning their slot from redis-py's slot map at each of its rounds
(every ``block_ms``, and at once on follow), starts a reader for a new master and retires
a reader left without streams. While a reader cannot reach its node it refreshes the slot
map every round, so after a failover the promoted replica's reader starts as soon as the
cluster says so, and the retired node stops counting as down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from reactive_nb.stores.bus.client import slot_groups
from reactive_nb.stores.bus.cursor import Cursor
from reactive_nb.stores.bus.outbox import FIRST_DELAY, MAX_DELAY
from reactive_nb.stores.bus.read import xread_streams
from reactive_nb.stores.slots import slot_moving
from reactive_nb.threads import Background

__all__ = ["NodeReader", "NodeReaders", "ReaderStats"]

logger = logging.getLogger("reactive_nb.stores.bus")


class _Bus(Protocol):
    """What a node reader asks of its bus (:class:`~reactive_nb.stores.bus.redis.RedisBus`)."""

    block_ms: int

    def _key(self, tenant: str) -> str: ...

    def _cursor_snapshot(self) -> dict[str, Cursor]: ...

    def _read(self, tenants: list[str]) -> list[str]: ...

    def _answered(self, source: str = ...) -> None: ...

    def _mark_down(self, where: str, exc: BaseException, source: str = ...) -> None: ...

    def _mark_up(self, source: str = ...) -> bool: ...


@dataclass(frozen=True)
class ReaderStats:
    """One node reader as tests and diagnostics see it: its master (``host:port``), how
    many followed tenants it reads, its rounds and its blocking reads so far."""

    node: str
    tenants: int
    rounds: int
    blocking_reads: int


def down_errors(cluster: bool = True) -> tuple[type[BaseException], ...]:
    """The errors that mean "Redis does not answer now": a connection failing; on a
    cluster also CLUSTERDOWN while a failover runs, and a slot map that cannot be loaded or
    does not cover a slot."""
    import redis
    from redis.exceptions import ClusterDownError, RedisClusterException

    down = (redis.ConnectionError, redis.TimeoutError, OSError)
    return (*down, ClusterDownError, RedisClusterException) if cluster else down


class NodeReader:
    """The reader of the followed streams whose slot one master owns (see the module)."""

    def __init__(self, bus: _Bus, client: Any, node: str) -> None:
        self.node = node
        self._bus = bus
        self._client = client
        self._down_errors = down_errors()
        self._wake = threading.Event()  # set when its tenants change, and by stop()
        self._thread = Background(f"bus-redis-{node}", self._loop, wake=self._wake.set)
        #: The tenants whose slot its node owns, set by :class:`NodeReaders`: a frozenset
        #: swapped whole, so reading it needs no lock.
        self.tenants: frozenset[str] = frozenset()
        self.down = False  # its last round failed to reach Redis
        self.rounds = 0
        self.blocking_reads = 0
        # The reader thread's own: tenants read in full since given, the one last heard of.
        self._read_since: frozenset[str] = frozenset()
        self._hot: str | None = None

    def start(self) -> None:
        self._thread.start()

    def retire(self) -> None:
        """Ask the thread to end, without waiting (it may be in a blocking read)."""
        self._thread.stopping.set()
        self._wake.set()

    def join(self) -> None:
        self._thread.stop()

    @property
    def alive(self) -> bool:
        return self._thread.alive

    def assign(self, tenants: frozenset[str]) -> None:
        if tenants != self.tenants:
            self.tenants = tenants
            self._wake.set()

    def _loop(self, stop: threading.Event) -> None:
        delay = FIRST_DELAY
        last_error = ""
        while not stop.is_set():
            try:
                self._round(stop)
            except Exception as exc:
                if stop.is_set():
                    break
                wait = delay
                delay = min(delay * 2, MAX_DELAY)
                if isinstance(exc, self._down_errors):
                    self.down = True
                    self._bus._mark_down(f"read from {self.node}", exc, self.node)
                    if stop.is_set():  # retired meanwhile: its outage is not the bus's
                        self._bus._mark_up(self.node)
                        break
                elif slot_moving(exc):
                    # A slot of ours is being moved: not an outage, and over soon. The
                    # cursors stay where they are: nothing read is lost, nothing skipped.
                    logger.debug("reading from %s: slot moving (%s); reading again", self.node,
                                 exc)
                    wait = min(wait, self._bus.block_ms / 1000)
                else:
                    if repr(exc) != last_error:
                        logger.exception("the Redis bus reader of %s failed; retrying",
                                         self.node)
                    last_error = repr(exc)
                self._read_since = frozenset()  # read every stream in full once back
                self._wake.wait(wait)  # sooner when its tenants change (e.g. regrouped)
            else:
                delay = FIRST_DELAY
                last_error = ""

    def _round(self, stop: threading.Event) -> None:
        self._wake.clear()
        cursors = self._bus._cursor_snapshot()
        mine = [t for t in self.tenants if t in cursors]
        if not mine:
            self._read_since = frozenset()
            self._wake.wait(self._bus.block_ms / 1000)
            return
        self.rounds += 1
        todo = [t for t in mine if t not in self._read_since or cursors[t].last_id is None]
        if not todo:
            by_key = {self._bus._key(t): t for t in mine}
            news = self._news({k: cursors[t].last_id for k, t in by_key.items()}, stop)
            if news is None:
                return
            todo = [by_key[k] for k in news if k in by_key]
            if todo:
                self._hot = todo[0]
        while todo and not stop.is_set():
            todo = self._bus._read(todo)
        if todo:
            return  # stopping
        self._read_since = frozenset(mine)
        self.down = False
        self._bus._answered(self.node)

    def _news(self, streams: dict[Any, Any], stop: threading.Event) -> list[str] | None:
        """The keys of ``streams`` (key -> last id read) that have entries after it: probed
        at once for every slot but one, then, if none has, waited for on that one. None
        when it did not ask Redis (stopping, or its tenants changed: a new round)."""
        groups = slot_groups(self._client, streams)
        hot = self._bus._key(self._hot) if self._hot is not None else None
        waited = next((g for g in groups if hot in g), groups[0])
        others = [g for g in groups if g is not waited]
        if others:
            pipe = self._client.pipeline(transaction=False)
            for group in others:
                pipe.xread({k: streams[k] for k in group}, count=1)
            found = [key for reply in pipe.execute() for key in xread_streams(reply)]
            if found or stop.is_set() or self._wake.is_set():
                return found
        elif stop.is_set() or self._wake.is_set():
            return None
        self.blocking_reads += 1
        reply: Any = self._client.xread({k: streams[k] for k in waited}, count=1,
                                        block=self._bus.block_ms)
        return list(xread_streams(reply))

    def stats(self) -> ReaderStats:
        return ReaderStats(self.node, len(self.tenants), self.rounds, self.blocking_reads)


class NodeReaders:
    """The node readers of one bus: which master reads which followed stream (module doc).

    :meth:`regroup` runs on the bus's own thread only; :meth:`stats` and :meth:`close` may
    run on any.
    """

    def __init__(self, bus: _Bus, client: Any) -> None:
        self._bus = bus
        self._client = client
        # Guards _readers and _retired: dict and list operations and thread starts, never
        # a call to Redis, so it is uncontended.
        self._lock = threading.Lock()
        self._readers: dict[str, NodeReader] = {}  # master "host:port" -> its reader
        self._retired: list[NodeReader] = []  # asked to end, joined at close
        self._closed = False
        self._unplaced = False  # some slot had no known master at the last grouping

    def regroup(self, tenants: Iterable[str]) -> None:
        """Give each master's reader the followed tenants whose slot it owns now, starting
        and retiring readers as masters come and go. Talks to Redis only to refresh the
        slot map, while a reader cannot reach its node or a slot has no master."""
        with self._lock:
            stale = self._unplaced or any(r.down for r in self._readers.values())
        if stale:
            try:
                self._client.nodes_manager.initialize()
            except Exception as exc:  # every node unreachable: the readers say so
                logger.debug("could not refresh the cluster's slot map: %s", exc)
        groups: dict[str, set[str]] = {}
        unplaced = False
        for tenant in tenants:
            try:
                node = self._client.get_node_from_key(self._bus._key(tenant)).name
            except Exception:  # SlotNotCoveredError: no master known for the slot now
                unplaced = True
                continue
            groups.setdefault(node, set()).add(tenant)
        retired = []
        with self._lock:
            self._unplaced = unplaced
            if self._closed:
                return
            for node, mine in groups.items():
                reader = self._readers.get(node)
                if reader is None:
                    reader = self._readers[node] = NodeReader(self._bus, self._client, node)
                    reader.assign(frozenset(mine))
                    reader.start()
                else:
                    reader.assign(frozenset(mine))
            for node in [n for n in self._readers if n not in groups]:
                reader = self._readers.pop(node)
                reader.retire()
                retired.append(reader)
            self._retired = [r for r in self._retired if r.alive] + retired
        for reader in retired:
            # Its streams are read elsewhere now (or not followed): whatever outage it was
            # in is no longer the bus's.
            self._bus._mark_up(reader.node)

    def stats(self) -> list[ReaderStats]:
        with self._lock:
            readers = list(self._readers.values())
        return sorted((r.stats() for r in readers), key=lambda s: s.node)

    def close(self) -> None:
        """Stop every reader: all asked at once, then joined (each ends within a blocking
        read)."""
        with self._lock:
            self._closed = True
            readers = [*self._readers.values(), *self._retired]
            self._readers, self._retired = {}, []
        for reader in readers:
            reader.retire()
        for reader in readers:
            reader.join()
