"""A redis-server of a test's own: start, stop, pause, snapshot and restore it for real."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REQUIRE
from tests.serving import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eventually(predicate: Callable[[], bool], timeout: float = 15.0,
               what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    assert wait_for(predicate, timeout), f"{what} not met within {timeout} s"


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


@pytest.fixture(name="server")
def server_fixture(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server that keeps its data across a stop (append-only file)."""
    import os
    import signal

    need_redis_server()
    data = tmp_path / "redis"
    data.mkdir()
    own = RedisServer(data, appendonly=True)
    own.start()
    try:
        yield own
    finally:
        if own.proc is not None:  # a test may have left it paused (SIGSTOP)
            with contextlib.suppress(ProcessLookupError):
                os.kill(own.proc.pid, signal.SIGCONT)
        own.stop()
