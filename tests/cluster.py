"""A real local Redis Cluster for the tests: six ``redis-server --cluster-enabled yes``
processes (3 masters, 3 replicas) on free ports, created once per session.

Each node also listens on its cluster bus port P + 10000, so P is picked below 55536 with
both P and P + 10000 free. Everything lives in a temporary directory of its own, and
every process is shut down at the end of the session. ``make`` is what the session
fixture ``redis_cluster`` (in ``conftest.py`` of the suites that use it) calls.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REQUIRE, delete_prefix, new_prefix
from tests.redis_server import eventually

NODE_TIMEOUT_MS = 1500
HOST = "127.0.0.1"


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """``n`` ports P < 55536 with P and P + 10000 free (not a guarantee: only likely)."""
    found: list[int] = []
    rng = random.Random()
    while len(found) < n:
        port = rng.randrange(20000, 55000)
        if port not in found and port + 10000 not in found and _free(port) and _free(
                port + 10000):
            found.append(port)
    return found


def redis_cli(*args: str, timeout: float = 60.0) -> str:
    """Run ``redis-cli`` with these arguments; its output (raises on failure)."""
    done = subprocess.run(["redis-cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


@dataclass
class Cluster:
    """A running local cluster; ``url`` is the ``?cluster=true`` form ``connect`` takes."""

    ports: list[int]
    directory: Path
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.ports[0]}/0?cluster=true"

    def client(self, **kwargs: Any) -> Any:
        """A RedisCluster client reaching every live node (tests' own admin client)."""
        from redis.cluster import ClusterNode, RedisCluster

        nodes = [ClusterNode(HOST, p) for p in self.ports if self.alive(p)]
        return RedisCluster(startup_nodes=nodes, **kwargs)

    def start_node(self, port: int) -> None:
        node_dir = self.directory / str(port)
        node_dir.mkdir(exist_ok=True)
        log = open(node_dir / "log", "ab")  # noqa: SIM115 - kept open by the process
        self.processes[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", HOST, "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--dir", str(node_dir),
             "--save", "", "--appendonly", "no"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _wait_for(lambda: _answers(port), f"node {port} to start")

    def alive(self, port: int) -> bool:
        process = self.processes.get(port)
        return process is not None and process.poll() is None

    def info(self, port: int, section: str) -> dict[str, str]:
        out = redis_cli("-h", HOST, "-p", str(port), section.split()[0], *section.split()[1:])
        pairs = (line.split(":", 1) for line in out.splitlines() if ":" in line)
        return {k.strip(): v.strip() for k, v in pairs}

    def master_of(self, slot: int) -> int:
        """The port of the master that serves ``slot`` now (asked of a live node)."""
        client = self.client()
        try:
            node = client.nodes_manager.get_node_from_slot(slot)
            return int(node.port)
        finally:
            client.close()

    def node(self, port: int) -> Any:
        """A plain client of one node (commands about that node: INFO, CLIENT LIST)."""
        import redis

        return redis.Redis(host=HOST, port=port, socket_timeout=10)

    def node_id(self, port: int) -> str:
        return redis_cli("-h", HOST, "-p", str(port), "cluster", "myid").strip()

    def begin_migration(self, slot: int, target: int) -> int:
        """Mark ``slot`` importing on ``target`` and migrating on its master, the first
        steps of ``redis-cli --cluster reshard``; the master's port. No key moves yet."""
        source = self.master_of(slot)
        redis_cli("-h", HOST, "-p", str(target), "cluster", "setslot", str(slot),
                  "importing", self.node_id(source))
        redis_cli("-h", HOST, "-p", str(source), "cluster", "setslot", str(slot),
                  "migrating", self.node_id(target))
        return source

    def keys_in_slot(self, port: int, slot: int) -> list[str]:
        """The keys of ``slot`` that node ``port`` holds."""
        out = redis_cli("-h", HOST, "-p", str(port), "cluster", "getkeysinslot", str(slot),
                        "100000")
        return out.split()

    def migrate(self, source: int, target: int, keys: list[str]) -> None:
        """MIGRATE these keys from ``source`` to ``target`` (one batch of a reshard)."""
        redis_cli("-h", HOST, "-p", str(source), "migrate", HOST, str(target), "", "0",
                  "5000", "keys", *keys)

    def finish_migration(self, slot: int, source: int, target: int) -> None:
        """Move the keys of ``slot`` still on ``source``, then give the slot to ``target``:
        the rest of a reshard."""
        keys = self.keys_in_slot(source, slot)
        if keys:
            self.migrate(source, target, keys)
        self.end_migration(slot, target)

    @contextlib.contextmanager
    def migrating(self, slot: int, target: int) -> Iterator[int]:
        """``slot`` migrating to ``target`` (:meth:`begin_migration`) inside the block, which
        gets the source's port; finished on the way out unless the block did, so the
        cluster stays whole whatever the test does."""
        source = self.begin_migration(slot, target)
        try:
            yield source
        finally:
            if self.master_of(slot) != target:
                self.finish_migration(slot, source, target)

    def end_migration(self, slot: int, target: int) -> None:
        """Give ``slot`` to ``target`` on every master (the last step of a reshard) and
        wait until the cluster says so."""
        target_id = self.node_id(target)
        for port in self.masters():
            redis_cli("-h", HOST, "-p", str(port), "cluster", "setslot", str(slot), "node",
                      target_id)
        _wait_for(lambda: self.master_of(slot) == target, f"slot {slot} to move")

    def errors(self, port: int, kind: str) -> int:
        """How many ``kind`` errors (``TRYAGAIN``, ``ASK``...) ``port`` answered so far."""
        found = self.info(port, "info errorstats").get(f"errorstat_{kind}", "count=0")
        return int(found.split("count=")[1].split(",")[0])

    def blocked(self, port: int, name: str) -> int:
        """Connections named ``name`` blocked in a command on ``port`` now (CLIENT LIST)."""
        client = self.node(port)
        try:
            return sum(1 for c in client.client_list()
                       if c.get("name") == name and "b" in c.get("flags", ""))
        finally:
            client.close()

    def masters(self) -> list[int]:
        ports = []
        for port in self.ports:
            if self.alive(port) and self.info(port, "info replication").get("role") == "master":
                ports.append(port)
        return ports

    def kill(self, port: int) -> None:
        """SIGKILL one node (no shutdown, no failover handshake)."""
        process = self.processes.pop(port)
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and agrees on the slots."""

        def ok() -> bool:
            for port in self.ports:
                if not self.alive(port):
                    continue
                info = self.info(port, "cluster info")
                if info.get("cluster_state") != "ok" or info.get(
                        "cluster_slots_assigned") != "16384":
                    return False
            return True

        _wait_for(ok, "cluster_state:ok", timeout)

    def stop(self) -> None:
        for port, process in list(self.processes.items()):
            with contextlib.suppress(Exception):
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            self.processes.pop(port, None)
        shutil.rmtree(self.directory, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait_for(condition: Any, what: str, timeout: float = 20.0) -> None:
    eventually(condition, timeout, what)


def available() -> str | None:
    """None when redis-server and redis-cli are on PATH, else why not."""
    missing = [tool for tool in ("redis-server", "redis-cli") if shutil.which(tool) is None]
    return f"{', '.join(missing)} not on PATH" if missing else None


@contextlib.contextmanager
def make(nodes: int = 6) -> Iterator[Cluster]:
    """Start ``nodes`` nodes (masters and one replica each), create the cluster, wait for
    ``cluster_state:ok``; stop every node and remove the directory afterwards."""
    directory = Path(tempfile.mkdtemp(prefix=f"rnb-cluster-{os.getpid()}-"))
    cluster = Cluster(free_ports(nodes), directory)
    try:
        for port in cluster.ports:
            cluster.start_node(port)
        redis_cli("--cluster", "create", *(f"{HOST}:{p}" for p in cluster.ports),
                  "--cluster-replicas", "1", "--cluster-yes")
        cluster.wait_ok()
        # Every replica must be attached before a failover can promote it.
        _wait_for(lambda: sum(
            cluster.info(p, "info replication").get("master_link_status") == "up"
            for p in cluster.ports) == nodes // 2, "replicas to sync")
        yield cluster
    finally:
        cluster.stop()


# The one cluster of the session. Each test module importing ``redis_cluster`` gets its
# own instance of the session fixture (pytest keys fixtures by where they are defined),
# so they share this one: started by the first, stopped when the last is torn down (all
# at the end of the session).
_shared: list[Any] = []  # [ExitStack, Cluster, users] while running


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """One local Redis Cluster for the session. Without redis-server or redis-cli the
    tests using it skip, or fail under REACTIVE_NB_REQUIRE_SERVICES=1."""
    missing = available()
    if missing is not None:
        if REQUIRE:
            pytest.fail(f"a Redis Cluster cannot be started ({missing}) and "
                        "REACTIVE_NB_REQUIRE_SERVICES=1")
        pytest.skip(f"a Redis Cluster cannot be started: {missing}")
    if not _shared:
        stack = contextlib.ExitStack()
        _shared.extend([stack, stack.enter_context(make()), 0])
    _shared[2] += 1
    try:
        yield _shared[1]
    finally:
        _shared[2] -= 1
        if _shared[2] == 0:
            stack = _shared[0]
            _shared.clear()
            stack.close()


@pytest.fixture
def cluster_prefix(redis_cluster: Cluster) -> Iterator[str]:
    """A key prefix of this test's own on the cluster; its keys are deleted afterwards."""
    prefix = new_prefix()
    yield prefix
    delete_prefix(redis_cluster.client(), prefix)
