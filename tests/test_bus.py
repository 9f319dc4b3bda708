"""The change bus: the same behaviour in memory and on Redis, then what only Redis does --
other processes, reconnects, outages, gaps -- against real Redis servers."""

from __future__ import annotations

import logging
import os
import queue
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from reactive_nb.events import ALL_TABLES, Change
from reactive_nb.stores.bus import Bus, MemoryBus, RedisBus
from reactive_nb.stores.bus.cursor import Cursor, advance
from tests.cluster import cluster_prefix, redis_cluster  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
WAIT = 10.0  # seconds: a bound that is never reached when things work
BLOCK_MS = 100  # short blocking reads keep close() fast


class Inbox:
    """A subscriber that records changes and the thread that delivered them."""

    def __init__(self) -> None:
        self.changes: queue.Queue[Change] = queue.Queue()
        self.threads: list[str] = []

    def __call__(self, change: Change) -> None:
        self.threads.append(threading.current_thread().name)
        self.changes.put(change)

    def get(self) -> Change:
        return self.changes.get(timeout=WAIT)

    def until(self, change_id: str) -> list[Change]:
        """Every change received up to and including the one with this id."""
        got = [self.get()]
        while got[-1].id != change_id:
            got.append(self.get())
        return got

    def drained(self) -> list[Change]:
        got = []
        while not self.changes.empty():
            got.append(self.changes.get_nowait())
        return got


def change(tenant: str = "acme", *tables: str, origin: str = "test") -> Change:
    return Change(tenant, frozenset(tables or ("agent",)), origin)


@pytest.fixture(params=["memory", "redis", "cluster"])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    """The same test on every implementation: memory, one Redis, a Redis Cluster."""
    with ExitStack() as stack:
        if request.param == "memory":
            made: Bus = MemoryBus()
        elif request.param == "redis":
            client = request.getfixturevalue("redis_client")
            made = RedisBus(client, prefix=request.getfixturevalue("redis_prefix"),
                            block_ms=BLOCK_MS)
        else:
            cluster = request.getfixturevalue("redis_cluster").client()
            stack.callback(cluster.close)
            made = RedisBus(cluster, prefix=request.getfixturevalue("cluster_prefix"),
                            block_ms=BLOCK_MS)
        stack.callback(made.close)
        yield made


@pytest.fixture
def new_bus(redis_url: str, redis_prefix: str) -> Iterator[Callable[..., RedisBus]]:
    """Make a RedisBus on a client of its own, like one per process; closed afterwards."""
    import redis

    with ExitStack() as stack:

        def make(url: str = redis_url, **kwargs: Any) -> RedisBus:
            client = redis.Redis.from_url(url)
            stack.callback(client.close)
            kwargs.setdefault("prefix", redis_prefix)
            kwargs.setdefault("block_ms", BLOCK_MS)
            made = RedisBus(client, **kwargs)
            stack.callback(made.close)
            return made

        yield make


@pytest.fixture(params=["redis", "cluster"])
def any_new_bus(request: pytest.FixtureRequest) -> Iterator[Callable[..., RedisBus]]:
    """``new_bus`` on one Redis, then on a Redis Cluster (one client per bus there too)."""
    if request.param == "redis":
        yield request.getfixturevalue("new_bus")
        return
    nodes = request.getfixturevalue("redis_cluster")
    prefix = request.getfixturevalue("cluster_prefix")
    with ExitStack() as stack:

        def make(**kwargs: Any) -> RedisBus:
            client = nodes.client()
            stack.callback(client.close)
            kwargs.setdefault("prefix", prefix)
            kwargs.setdefault("block_ms", BLOCK_MS)
            made = RedisBus(client, **kwargs)
            stack.callback(made.close)
            return made

        yield make


def stream(prefix: str, tenant: str = "acme") -> str:
    return f"{prefix}:{{{tenant}}}:changes"


def kill_reader(admin: Any, bus: RedisBus) -> None:
    """Drop the reader's connection server-side while it is blocked in XREAD."""
    for _ in range(10_000):  # the reader spends nearly all its time blocked
        blocked = [c for c in admin.client_list()
                   if c["name"] == bus.reader_client_name and "b" in c["flags"]]
        if blocked:
            admin.client_kill_filter(_id=blocked[0]["id"])
            return
    pytest.fail("the bus reader was never blocked in XREAD")


def records(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "reactive_nb.stores.bus" and r.levelno == level and text in r.getMessage()]


# --- the same behaviour on every bus ------------------------------------------------------

def test_local_subscribers_get_a_change_at_once_in_the_callers_thread(bus: Bus) -> None:
    first, second = Inbox(), Inbox()
    bus.subscribe(first)
    bus.subscribe(second)
    sent = change("acme", "agent", "message")
    bus.publish(sent)
    # Synchronous: already delivered when publish returns, on this thread.
    assert first.drained() == [sent]
    assert second.drained() == [sent]
    assert first.threads == [threading.current_thread().name]


def test_unsubscribe_stops_delivery(bus: Bus) -> None:
    kept, dropped = Inbox(), Inbox()
    bus.subscribe(kept)
    unsubscribe = bus.subscribe(dropped)
    bus.publish(change())
    unsubscribe()
    unsubscribe()  # harmless twice
    bus.publish(change())
    assert len(kept.drained()) == 2
    assert len(dropped.drained()) == 1


def test_a_failing_callback_does_not_stop_the_others(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: Change) -> None:
        raise RuntimeError("subscriber bug")

    before, after = Inbox(), Inbox()
    bus.subscribe(before)
    bus.subscribe(broken)
    bus.subscribe(after)
    with caplog.at_level(logging.ERROR, logger="reactive_nb.stores.bus"):
        bus.publish(change())
    assert len(before.drained()) == 1
    assert len(after.drained()) == 1
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failed) == 1
    assert failed[0].exc_info and "subscriber bug" in str(failed[0].exc_info[1])


def test_close_is_idempotent_and_follow_is_harmless(bus: Bus) -> None:
    assert isinstance(bus, Bus)
    bus.follow("acme")
    bus.unfollow("acme")
    bus.close()
    bus.close()


# --- Redis: other processes ---------------------------------------------------------------

@pytest.mark.redis
def test_another_process_change_arrives_for_followed_tenants_only(
    any_new_bus: Callable[..., RedisBus],
) -> None:
    a, b = any_new_bus(origin="proc-a"), any_new_bus(origin="proc-b")
    inbox = Inbox()
    a.subscribe(inbox)
    a.follow("acme")
    other = change("globex", origin="proc-b")
    sent = Change("acme", frozenset({"agent", "public.message", ALL_TABLES}), "proc-b", "c-1")
    b.publish(other)  # A does not follow globex: it must never arrive
    b.publish(sent)
    assert inbox.get() == sent  # same tenant, tables, origin and id
    # The reader thread; on a cluster, the reader of the master owning acme's slot.
    node = [f"-{s.node}" for s in a.reader_stats()] if a.cluster else [""]
    assert inbox.threads == [f"reactive_nb-bus-redis{n}" for n in node]
    assert inbox.drained() == []


@pytest.mark.redis
def test_follow_starts_at_the_end_and_misses_nothing_after_it(
    any_new_bus: Callable[..., RedisBus],
) -> None:
    a, b = any_new_bus(origin="proc-a"), any_new_bus(origin="proc-b")
    inbox = Inbox()
    a.subscribe(inbox)
    b.publish(change("acme", "old", origin="proc-b"))  # before follow: not delivered
    a.follow("acme")
    first = change("acme", "new", origin="proc-b")
    b.publish(first)
    assert inbox.get() == first
    # While the reader blocks on acme only, follow globex and publish at once: the
    # start id taken by follow() makes the reader catch up when it adds globex.
    a.follow("globex")
    late = change("globex", origin="proc-b")
    b.publish(late)
    assert inbox.get() == late
    a.unfollow("acme")
    b.publish(change("acme", "after-unfollow", origin="proc-b"))
    marker = change("globex", "marker", origin="proc-b")
    b.publish(marker)
    assert inbox.until(marker.id) == [marker]


@pytest.mark.redis
def test_own_changes_are_not_delivered_twice(any_new_bus: Callable[..., RedisBus]) -> None:
    a, b = any_new_bus(origin="proc-a"), any_new_bus(origin="proc-b")
    inbox = Inbox()
    a.subscribe(inbox)
    a.follow("acme")
    mine = change("acme", "agent", origin="proc-a")
    # Captured elsewhere (e.g. a PostgreSQL notification) but published by A: no echo either.
    relayed = change("acme", "message", origin="pg:4242")
    a.publish(mine)
    a.publish(relayed)
    assert inbox.drained() == [mine, relayed]  # at once, in-process
    marker = change("acme", "marker", origin="proc-b")
    b.publish(marker)  # after A's entries in the stream: their echo would come first
    assert inbox.until(marker.id) == [marker]


@pytest.mark.redis
def test_raw_xadd_from_any_writer_is_a_change(
    new_bus: Callable[..., RedisBus], redis_client: Any, redis_prefix: str
) -> None:
    a = new_bus()
    inbox = Inbox()
    a.subscribe(inbox)
    a.follow("acme")
    redis_client.hincrby(f"{redis_prefix}:{{acme}}:versions", "agent", 1)
    entry_id = redis_client.xadd(stream(redis_prefix),
                                 {"tables": "agent, message", "origin": "cron"},
                                 maxlen=10_000, approximate=True).decode()
    assert inbox.get() == Change("acme", frozenset({"agent", "message"}), "cron", entry_id)


@pytest.mark.redis
def test_malformed_entries_are_skipped_and_reading_goes_on(
    new_bus: Callable[..., RedisBus], redis_client: Any, redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = new_bus()
    inbox = Inbox()
    a.subscribe(inbox)
    a.follow("acme")
    key = stream(redis_prefix)
    with caplog.at_level(logging.WARNING, logger="reactive_nb.stores.bus"):
        redis_client.xadd(key, {"origin": "cron"})  # no tables
        redis_client.xadd(key, {"tables": b"\xff\xfe", "origin": "cron"})  # not UTF-8
        redis_client.xadd(key, {"tables": " , ", "origin": b"\xff"})  # no table at all
        good = redis_client.xadd(key, {"tables": "agent"}).decode()  # origin is optional
        assert inbox.get() == Change("acme", frozenset({"agent"}), "unknown", good)
    assert len(records(caplog, logging.WARNING, "malformed")) == 3
    assert inbox.drained() == []


@pytest.mark.redis
def test_a_failing_callback_does_not_stop_the_reader(
    new_bus: Callable[..., RedisBus], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = new_bus(origin="proc-a"), new_bus(origin="proc-b")

    def broken(_: Change) -> None:
        raise RuntimeError("subscriber bug")

    inbox = Inbox()
    a.subscribe(broken)
    a.subscribe(inbox)
    a.follow("acme")
    with caplog.at_level(logging.ERROR, logger="reactive_nb.stores.bus"):
        sent = [change("acme", origin="proc-b") for _ in range(3)]
        for c in sent:
            b.publish(c)
        assert [inbox.get() for _ in sent] == sent
    assert len(records(caplog, logging.ERROR, "subscriber")) == 3


@pytest.mark.redis
def test_publish_in_a_subprocess_reaches_this_process(
    new_bus: Callable[..., RedisBus], redis_url: str, redis_prefix: str
) -> None:
    a = new_bus()
    inbox = Inbox()
    a.subscribe(inbox)
    a.follow("acme")
    code = textwrap.dedent(f"""
        import redis
        from reactive_nb.stores.bus import RedisBus
        from reactive_nb.events import Change
        client = redis.Redis.from_url({redis_url!r})
        with RedisBus(client, prefix={redis_prefix!r}) as bus:
            bus.publish(Change("acme", {{"agent"}}, id="from-child"))
        client.close()
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-W", "error", "-c", code], env=env, check=True,
                   timeout=60)
    got = inbox.get()
    assert (got.tenant, got.tables, got.id) == ("acme", frozenset({"agent"}), "from-child")
    assert got.origin not in (a.origin, "unknown")  # the child's own PROCESS_ORIGIN


# --- Redis: disconnects, outages and gaps -------------------------------------------------

@pytest.mark.redis
def test_reader_reconnects_after_client_kill_without_losing_changes(
    new_bus: Callable[..., RedisBus], redis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gaps: queue.Queue[str] = queue.Queue()
    a, b = new_bus(origin="proc-a", on_gap=gaps.put), new_bus(origin="proc-b")
    inbox = Inbox()
    a.subscribe(inbox)
    a.follow("acme")
    warned = threading.Event()

    class OnWarning(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == logging.WARNING:
                warned.set()

    handler = OnWarning()
    logging.getLogger("reactive_nb.stores.bus").addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="reactive_nb.stores.bus"):
            warm = change("acme", origin="proc-b")
            b.publish(warm)
            assert inbox.get() == warm
            kill_reader(redis_client, a)
            assert warned.wait(WAIT)
            # The reader is disconnected (waiting to reconnect): these must all arrive.
            sent = [change("acme", f"t{i}", origin="proc-b") for i in range(20)]
            for c in sent:
                b.publish(c)
            assert inbox.until(sent[-1].id) == sent
    finally:
        logging.getLogger("reactive_nb.stores.bus").removeHandler(handler)
    assert len(records(caplog, logging.WARNING, "unreachable")) == 1
    assert len(records(caplog, logging.INFO, "recovered")) == 1
    assert gaps.empty()
    names = [c["name"] for c in redis_client.client_list()]
    assert names.count(a.reader_client_name) >= 1  # connected again


@pytest.mark.redis
def test_gap_is_reported_when_unread_entries_were_trimmed(
    new_bus: Callable[..., RedisBus], redis_client: Any, redis_prefix: str
) -> None:
    gaps: queue.Queue[str] = queue.Queue()
    a, b = new_bus(origin="proc-a", on_gap=gaps.put), new_bus(origin="proc-b", maxlen=5)
    entered, release = threading.Event(), threading.Event()
    inbox = Inbox()

    def slow(_: Change) -> None:  # holds the reader, like a process that lags behind
        entered.set()
        assert release.wait(WAIT)

    unsubscribe = a.subscribe(slow)
    a.subscribe(inbox)
    a.follow("acme")
    b.publish(change("acme", origin="proc-b"))
    assert entered.wait(WAIT)
    unsubscribe()
    sent = [change("acme", f"t{i}", origin="proc-b") for i in range(10)]
    for c in sent:
        b.publish(c)
    redis_client.xtrim(stream(redis_prefix), maxlen=3, approximate=False)
    release.set()
    assert gaps.get(timeout=WAIT) == "acme"
    got = inbox.until(sent[-1].id)
    assert got[-3:] == sent[-3:]
    assert not set(sent[:7]) & set(got)  # trimmed before A could read them
    marker = change("acme", "marker", origin="proc-b")
    b.publish(marker)
    assert inbox.until(marker.id) == [marker]
    assert gaps.empty()  # reported once


@pytest.mark.redis
def test_no_gap_when_only_read_entries_are_trimmed(
    new_bus: Callable[..., RedisBus], redis_client: Any, redis_prefix: str
) -> None:
    gaps: queue.Queue[str] = queue.Queue()
    a, b = new_bus(origin="proc-a", on_gap=gaps.put), new_bus(origin="proc-b", maxlen=1)
    inbox = Inbox()
    a.subscribe(inbox)
    a.follow("acme")
    for i in range(5):
        sent = change("acme", f"t{i}", origin="proc-b")
        b.publish(sent)
        assert inbox.get() == sent
        # Empty the stream: its next first entry is newer than anything A read, which a
        # check on the first entry alone would mistake for a gap.
        redis_client.xtrim(stream(redis_prefix), maxlen=0, approximate=False)
    kill_reader(redis_client, a)  # a reconnect re-checks every stream
    last = change("acme", "last", origin="proc-b")
    b.publish(last)
    assert inbox.get() == last
    assert gaps.empty()


@pytest.mark.redis
def test_gap_is_reported_when_the_stream_vanished(
    new_bus: Callable[..., RedisBus], redis_client: Any, redis_prefix: str
) -> None:
    gaps: queue.Queue[str] = queue.Queue()
    a, b = new_bus(origin="proc-a", on_gap=gaps.put), new_bus(origin="proc-b")
    inbox = Inbox()
    a.subscribe(inbox)
    a.follow("acme")
    first = change("acme", origin="proc-b")
    b.publish(first)
    assert inbox.get() == first
    redis_client.delete(stream(redis_prefix))
    kill_reader(redis_client, a)
    assert gaps.get(timeout=WAIT) == "acme"
    after = change("acme", "after", origin="proc-b")
    b.publish(after)
    assert inbox.get() == after  # read from the start of the new stream
    assert gaps.empty()


@pytest.mark.redis
def test_gap_is_reported_when_the_stream_was_recreated(
    new_bus: Callable[..., RedisBus], redis_client: Any, redis_prefix: str
) -> None:
    gaps: queue.Queue[str] = queue.Queue()
    a, b = new_bus(origin="proc-a", on_gap=gaps.put), new_bus(origin="proc-b")
    inbox = Inbox()
    a.subscribe(inbox)
    a.follow("acme")
    sent = [change("acme", f"t{i}", origin="proc-b") for i in range(3)]
    for c in sent:
        b.publish(c)
    assert inbox.until(sent[-1].id) == sent
    last_ms = int(redis_client.xinfo_stream(stream(redis_prefix))["last-generated-id"]
                  .split(b"-")[0])
    redis_client.delete(stream(redis_prefix))
    # A stream recreated within the same millisecond would get ids below the reader's
    # cursor; a real recreation (a Redis restart) cannot: let Redis's clock move on first.
    while (lambda t: t[0] * 1000 + t[1] // 1000)(redis_client.time()) <= last_ms:
        pass
    after = change("acme", "after", origin="proc-b")
    b.publish(after)  # a new stream with fewer entries ever added than A had read
    assert inbox.get() == after
    assert gaps.get(timeout=WAIT) == "acme"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.redis
def test_publish_never_raises_when_redis_is_unreachable(
    redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    # A port bound but not listening: connections are refused, and no client socket can
    # take it as its own local port (a self-connected socket would answer, as an echo).
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    # Made like this, the client itself retries 10 times (~4 s) before giving up.
    client = redis.Redis(host="127.0.0.1", port=closed.getsockname()[1])
    inbox = Inbox()
    with caplog.at_level(logging.WARNING, logger="reactive_nb.stores.bus"), \
            RedisBus(client, prefix=redis_prefix, block_ms=BLOCK_MS) as a:
        a.subscribe(inbox)
        started = time.monotonic()
        a.follow("acme")  # cannot reach Redis either: no error, it retries
        sent = [change() for _ in range(3)]
        for c in sent:
            a.publish(c)
        assert inbox.drained() == sent
        assert time.monotonic() - started < 2.0  # loose: the bus does not retry inline
    assert len(records(caplog, logging.WARNING, "unreachable")) == 1
    client.close()
    closed.close()


class RedisServer:
    """A throw-away redis-server without persistence, that a test can stop and restart."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary, self.directory, self.port = binary, directory, free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--loglevel", "notice"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # returns at once when the server is ready
            if "Ready to accept connections" in line:
                return
        pytest.fail(f"redis-server did not start (exit {self.proc.wait()})")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.redis
def test_redis_restart_holds_changes_then_sends_them_and_reports_the_gap(
    new_bus: Callable[..., RedisBus], own_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gaps: queue.Queue[str] = queue.Queue()
    a = new_bus(own_redis.url, origin="proc-a")
    b = new_bus(own_redis.url, origin="proc-b", on_gap=gaps.put)
    local, remote = Inbox(), Inbox()
    a.subscribe(local)
    b.subscribe(remote)
    b.follow("acme")
    with caplog.at_level(logging.INFO, logger="reactive_nb.stores.bus"):
        before = [change("acme", f"t{i}", origin="proc-a") for i in range(3)]
        for c in before:
            a.publish(c)
        assert remote.until(before[-1].id) == before
        own_redis.stop()  # and everything in it: no persistence
        during = [change("acme", "agent", origin="proc-a"),
                  change("acme", "message", origin="proc-a")]
        for c in during:
            a.publish(c)  # does not raise, does not block on the dead server
        assert local.drained() == before + during
        own_redis.start()
        # A's reader thread sends the held changes (merged) as soon as Redis is back.
        held = remote.get()
        assert held.tables == {"agent", "message"} and held.origin == "proc-a"
        assert gaps.get(timeout=WAIT) == "acme"  # B had read from a stream that is gone
    # One warning and one recovery per bus (A saw it publishing, B reading) for one outage.
    assert len(records(caplog, logging.WARNING, "unreachable")) == 2
    assert len(records(caplog, logging.INFO, "recovered")) == 2
    assert remote.drained() == []


# --- the gap rule on its own (Redis < 7 has no entries-added) ------------------------------

def info(last: str, first: str | None, length: int, added: int | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"last-generated-id": last.encode(), "length": length,
                             "first-entry": (first.encode(), {}) if first else None}
    if added is not None:
        found["entries-added"] = added
    return found


C = Cursor


@pytest.mark.parametrize(
    ("cursor", "stream_info", "ids", "expected"),
    [
        # Redis 7: trimmed = entries-added - length, compared with what we had read.
        (C("5-0", 5), info("9-0", "6-0", 4, 9), ["6-0", "9-0"], (C("9-0", 7), False, False)),
        (C("5-0", 5), info("9-0", "9-0", 1, 9), ["9-0"], (C("9-0", 9), True, False)),
        (C("5-0", 5), info("9-0", None, 0, 5), [], (C("5-0", 5), False, False)),
        (C("5-0", 5), info("7-0", "7-0", 1, 1), ["7-0"], (C("0-0", 0), True, True)),
        (C("5-0", 5), None, [], (C("0-0", 0), True, False)),
        (C("0-0", 0), None, [], (C("0-0", 0), False, False)),
        (C(None, None), info("9-0", "1-0", 9, 9), [], (C("9-0", 9), True, False)),
        # Redis < 7: a first entry newer than ours means entries were trimmed.
        (C("5-0", None), info("9-0", "4-0", 6), ["6-0", "9-0"], (C("9-0", None), False, False)),
        (C("5-0", None), info("9-0", "8-0", 2), ["8-0", "9-0"], (C("9-0", None), True, False)),
        (C("3-0", None), info("2-0", "1-0", 2), ["x"], (C("0-0", 0), True, True)),
    ],
)
def test_gap_rule(cursor: Cursor, stream_info: dict[str, Any] | None, ids: list[str],
                  expected: tuple[Cursor, bool, bool]) -> None:
    assert advance(cursor, stream_info, ids) == expected
