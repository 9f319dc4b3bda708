"""Redis going backwards: a restart from an older snapshot (or a failover to a lagging
replica) brings counters back to values an old entry recorded. The epoch (the server's
run_id, read with the counters) makes such an entry stale anyway."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import reactive_nb as rnb
from reactive_nb.stores.versions import RedisVersions
from tests.conftest import REQUIRE
from tests.teamhub import create
from tests.teamhub import define_agents as define


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eventually(predicate: Callable[[], bool], timeout: float = 15.0,
               what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        pause.wait(0.02)


def need_redis_server() -> None:
    """Skip (or fail, when services are required) without a redis-server binary."""
    if shutil.which("redis-server") is None:
        if REQUIRE:
            pytest.fail("redis-server is not on PATH and REACTIVE_NB_REQUIRE_SERVICES=1")
        pytest.skip("redis-server is not on PATH")


class RedisServer:
    """A redis-server of a test's own on a fixed port, persisting into ``dir``: it can be
    stopped, restored from an older snapshot and started again for real."""

    def __init__(self, dir: Path, appendonly: bool = False) -> None:
        self.port = free_port()
        self.dir = dir
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def dump(self) -> Path:
        return self.dir / "dump.rdb"

    def client(self) -> Any:
        """A client that fails at once instead of retrying (redis-py retries by default)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=5,
                           retry=Retry(NoBackoff(), 0))

    def start(self) -> None:
        """Start (on the same port every time) and wait until it answers."""
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--dbfilename", "dump.rdb", "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        try:
            def answers() -> bool:
                try:
                    return bool(client.ping())
                except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                    return False
            eventually(answers, 10, "redis-server answering")
        finally:
            client.close()

    def save(self) -> Path:
        """SAVE now; a copy of the snapshot, to restore later."""
        client = self.client()
        try:
            client.save()
        finally:
            client.close()
        copy = self.dir / f"snapshot-{time.monotonic_ns()}.rdb"
        shutil.copyfile(self.dump, copy)
        return copy

    def stop(self) -> None:
        """SHUTDOWN NOSAVE (what is not persisted is lost); kill if it will not stop."""
        if self.proc is None:
            return
        client = self.client()
        # Already gone, or the reply was lost with the connection: either way it stops.
        with contextlib.suppress(Exception):
            client.shutdown(nosave=True)
        client.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restore(self, snapshot: Path) -> None:
        """Replace the data with an older snapshot (while stopped)."""
        assert self.proc is None
        shutil.copyfile(snapshot, self.dump)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    need_redis_server()
    data = tmp_path / "redis"
    data.mkdir()
    own = RedisServer(data)
    own.start()
    try:
        yield own
    finally:
        own.stop()


def test_counters_from_an_older_snapshot_are_another_epoch(server: RedisServer) -> None:
    """The fault at the Versions level: after a restore the counters equal what an old
    entry recorded; the recorded snapshot must still not match."""
    client = server.client()
    try:
        versions = RedisVersions(client, prefix="rnb")
        versions.bump("acme", ["agent"])
        recorded = versions.snapshot("acme")  # what an entry computed now records
        old = server.save()
        versions.bump("acme", ["agent"])
        assert versions.get("acme", recorded) != recorded
        server.stop()
        server.restore(old)
        server.start()
        client.connection_pool.disconnect()  # the old connections died with the server
        assert versions.get("acme", ["agent"]) == {"agent": 1}  # counters went back ...
        assert versions.get("acme", recorded) != recorded  # ... the epoch did not
        assert versions.snapshot("acme") != recorded
        again = versions.snapshot("acme")
        assert versions.get("acme", again) == again  # and is stable while Redis runs
    finally:
        client.close()


def test_a_restored_redis_never_serves_an_entry_recorded_before(
        server: RedisServer, sqlite_url: str) -> None:
    """End to end: an entry cached before the snapshot matches the restored counters, and
    must still not be served."""
    create(sqlite_url)
    with rnb.connect(sqlite_url, redis=server.url, capture="local", workers=0) as db:
        agents = define(db)
        assert len(agents(organization_id="acme")) == 2  # cached at agent=0
        old = server.save()  # the snapshot holds that entry and agent=0
        db.execute("INSERT INTO agent (id, organization_id, name) VALUES (5, 'acme', 'eve')")
        assert len(agents(organization_id="acme")) == 3
        server.stop()
        server.restore(old)  # Redis comes back with agent=0 and the 2-row entry
        server.start()
        for _ in range(3):
            assert len(agents(organization_id="acme")) == 3  # never the stale 2
        hits = agents.stats.hits
        assert len(agents(organization_id="acme")) == 3
        assert agents.stats.hits == hits + 1  # and the cache works again
