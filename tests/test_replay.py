"""Version bumps that failed while Redis was unreachable are replayed as soon as it answers,
by a background thread, even in a process that only writes and never reads again."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterable

import pytest

import reactive_nb as rnb
from reactive_nb.stores.health import StoreHealth, redis_errors
from reactive_nb.stores.versions import MemoryVersions
from tests.conftest import our_threads
from tests.redis_server import (
    RedisServer,
    eventually,
    free_port,
    server_fixture,  # noqa: F401  (the `server` fixture)
)
from tests.teamhub import create
from tests.teamhub import define_agents as define

REPLAY = "reactive_nb-store-replay"
INSERT = "INSERT INTO agent (id, organization_id, name) VALUES ({id}, 'acme', '{name}')"


def replay_threads() -> list[threading.Thread]:
    return [t for t in our_threads() if t.name == REPLAY and t.is_alive()]


def store_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "reactive_nb"]


# -- end to end: real Redis, two ReactiveDBs -------------------------------------------------



def test_a_writer_only_outage_is_replayed_without_a_read(
        server: RedisServer, sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The fault: A cached a result, wrote while Redis was down and never read again; its
    bump was never replayed, so B, hitting the shared entry, stayed stale."""
    create(sqlite_url)
    with caplog.at_level(logging.INFO, logger="reactive_nb"), \
            rnb.connect(sqlite_url, redis=server.url, capture="local", workers=0) as a:
        assert len(define(a)(organization_id="acme")) == 2  # the shared entry
        server.stop()
        a.execute(INSERT.format(id=5, name="eve"))  # only a write: its bump fails
        assert a.health.down
        server.start()  # the entry and the counters are back, the bump is not
        eventually(lambda: not a.health.down, what="A replaying its bump by itself")
        eventually(lambda: not replay_threads(), what="the replay thread ending")
        with rnb.connect(sqlite_url, redis=server.url, capture="local", workers=0) as b:
            assert list(define(b)(organization_id="acme")["name"]) == ["ada", "bob", "eve"]
    messages = store_messages(caplog)
    assert sum("Redis is unreachable" in m for m in messages) == 1
    assert sum("Redis is reachable again" in m for m in messages) == 1


class Partition:
    """A TCP forwarder between one client and Redis that a test can cut and heal: a network
    partition, while the server (and its run_id, the epoch) stays up."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._stop = threading.Event()
        self._acceptor: threading.Thread | None = None
        self._pumps: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def heal(self) -> None:
        """Accept connections again (on the same port)."""
        self._stop.clear()
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.05)
        self._acceptor = threading.Thread(target=self._accept, args=(listener,),
                                          name="test-partition", daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        """Refuse new connections and break the open ones."""
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(10)  # after this, _sockets and _pumps no longer grow
            self._acceptor = None
        for sock in self._sockets:
            _shut(sock)
            sock.close()
        for thread in self._pumps:
            thread.join(10)
        self._sockets, self._pumps = [], []

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                client.settimeout(None)
                upstream = socket.create_connection(("127.0.0.1", self.target))
                self._sockets += [client, upstream]
                for src, dst in ((client, upstream), (upstream, client)):
                    pump = threading.Thread(target=_pump, args=(src, dst),
                                            name="test-partition", daemon=True)
                    self._pumps.append(pump)
                    pump.start()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    _shut(src)
    _shut(dst)


def test_a_writer_cut_off_from_redis_replays_when_the_partition_heals(
        server: RedisServer, sqlite_url: str) -> None:
    """Redis never restarts here (same run_id, same epoch): only the replay makes B fresh."""
    create(sqlite_url)
    partition = Partition(server.port)
    partition.heal()
    try:
        with rnb.connect(sqlite_url, redis=partition.url, capture="local", workers=0) as a, \
                rnb.connect(sqlite_url, redis=server.url, capture="local", workers=0) as b:
            assert len(define(a)(organization_id="acme")) == 2  # the shared entry
            partition.cut()
            a.execute(INSERT.format(id=5, name="eve"))  # its bump cannot reach Redis
            assert a.health.down
            partition.heal()
            eventually(lambda: not a.health.down, what="A replaying its bump by itself")
            assert len(define(b)(organization_id="acme")) == 3
    finally:
        partition.cut()


# -- StoreHealth alone, with a store that fails on demand ------------------------------------


class Flaky(MemoryVersions):
    """Memory counters that raise redis's ConnectionError while ``down`` is set, and can
    hold a bump in flight (``hold``) until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.hold = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.bumps: list[tuple[str, frozenset[str]]] = []

    def _check(self) -> None:
        import redis

        if self.down:
            raise redis.ConnectionError("connection refused (test)")

    def get(self, tenant: str, tables: Iterable[str]) -> dict[str, int]:
        self._check()
        return super().get(tenant, tables)

    def bump(self, tenant: str, tables: Iterable[str],
             once_id: str | None = None) -> dict[str, int] | None:
        self._check()
        names = frozenset(tables)
        if self.hold:
            self.entered.set()
            assert self.release.wait(10)
        self.bumps.append((tenant, names))
        return super().bump(tenant, names, once_id)


def fail_bump(health: StoreHealth, store: Flaky, tenant: str, tables: set[str]) -> None:
    """What ChangeRecorder does with a bump."""
    try:
        store.bump(tenant, tables)
    except health.errors as exc:
        health.bump_failed(tenant, tables, exc)


def test_one_replay_thread_per_outage_and_it_ends_on_recovery(
        caplog: pytest.LogCaptureFixture) -> None:
    store = Flaky()
    health = StoreHealth(store, redis_errors())
    try:
        with caplog.at_level(logging.INFO, logger="reactive_nb"):
            for table in ("agent", "message", "agent"):
                fail_bump(health, store, "acme", {table})
            assert len(replay_threads()) == 1
            assert health.down and not health.ready()
            store.down = False
            eventually(lambda: not health.down, what="the replay")
            eventually(lambda: not replay_threads(), what="the replay thread ending")
            assert store.get("acme", ["agent", "message"]) == {"agent": 1, "message": 1}
            assert health.ready()
            store.down = True  # a second outage gets a thread of its own
            fail_bump(health, store, "acme", {"tool"})
            assert len(replay_threads()) == 1
            store.down = False
            eventually(lambda: not health.down, what="the second replay")
            assert store.get("acme", ["tool"]) == {"tool": 1}
        messages = store_messages(caplog)
        assert sum("Redis is unreachable" in m for m in messages) == 2  # one per outage
        assert sum("Redis is reachable again" in m for m in messages) == 2
    finally:
        health.close()


def test_close_stops_the_replay_thread_while_redis_is_down(
        caplog: pytest.LogCaptureFixture) -> None:
    store = Flaky()
    health = StoreHealth(store, redis_errors())
    fail_bump(health, store, "acme", {"agent"})
    assert len(replay_threads()) == 1
    with caplog.at_level(logging.WARNING, logger="reactive_nb"):
        health.close()
    assert not replay_threads()
    assert any("agent" in m and "not" in m for m in store_messages(caplog))  # said, not lost
    health.close()  # idempotent
    fail_bump(health, store, "acme", {"agent"})  # after close: no new thread
    assert not replay_threads()


def test_a_reader_never_trusts_the_cache_while_a_replay_is_in_flight() -> None:
    """The replay thread has taken the owed bumps and is applying them: a reader's ready()
    must not report the store usable (nor drop the bumps) until they are applied."""
    store = Flaky()
    health = StoreHealth(store, redis_errors())
    try:
        fail_bump(health, store, "acme", {"agent"})
        store.hold = True
        store.down = False
        assert store.entered.wait(10)  # the thread is inside bump(), the owed set taken
        assert not health.ready()  # a reader racing it
        assert health.down
        store.release.set()
        eventually(lambda: not health.down, what="the replay finishing")
        assert health.ready()
        assert store.get("acme", ["agent"]) == {"agent": 1}
    finally:
        store.release.set()
        health.close()


def test_readers_racing_the_replay_lose_no_bump() -> None:
    """Many readers call ready() while the thread replays: every owed bump is applied, and
    whenever ready() says yes, every bump owed before it already is."""
    store = Flaky()
    health = StoreHealth(store, redis_errors())
    tables = {f"t{i}" for i in range(50)}
    try:
        for table in sorted(tables):
            fail_bump(health, store, "acme", {table})
        go = threading.Barrier(5)
        problems: list[str] = []

        def reader() -> None:
            go.wait(10)
            for _ in range(200):
                if health.ready():
                    applied = store.get("acme", tables)
                    if not all(applied.values()):
                        problems.append(f"ready with bumps owed: {applied}")
                    return

        readers = [threading.Thread(target=reader) for _ in range(4)]
        for thread in readers:
            thread.start()
        store.down = False
        go.wait(10)
        for thread in readers:
            thread.join(10)
        eventually(lambda: not health.down, what="the replay")
        assert not problems
        assert all(v >= 1 for v in store.get("acme", tables).values())
    finally:
        health.close()
