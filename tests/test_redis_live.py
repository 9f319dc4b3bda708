"""Live queries across real processes sharing one real Redis: delivery, restarts, recovery."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import reactive_nb as rnb
from reactive_nb.stores.bus import RedisBus
from tests.redis_server import eventually
from tests.teamhub import create, define_agents_inferred, wait_for
from tests.teamhub import define_agents as define

pytestmark = pytest.mark.redis

DEFINE = "from tests.teamhub import define_agents as define\n"


def run_process(body: str, **values: str) -> str:
    """Run a script in a fresh Python process (it imports reactive_nb like any user code)."""
    script = "import reactive_nb as rnb\n" + DEFINE + textwrap.dedent(body).format(**values)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def shared(sqlite_url: str, redis_url: str, redis_prefix: str) -> dict[str, str]:
    create(sqlite_url)
    return {"url": sqlite_url, "redis": redis_url, "prefix": redis_prefix}


WRITE = """
db = rnb.connect("{url}", redis="{redis}", key_prefix="{prefix}")
db.execute("INSERT INTO agent (id, organization_id, name) VALUES ({id}, 'acme', '{name}')")
db.close()
"""


def test_other_process_write_reaches_live_query(shared: dict[str, str]) -> None:
    with rnb.connect(shared["url"], redis=shared["redis"], key_prefix=shared["prefix"]) as db:
        live = define(db).live(organization_id="acme").wait(10)
        run_process(WRITE, id="10", name="from_b", **shared)
        wait_for(live, lambda df: "from_b" in set(df["name"]))
        assert live.status == "fresh"


def test_session_recovery_uses_shared_cache(shared: dict[str, str]) -> None:
    warm = """
db = rnb.connect("{url}", redis="{redis}", key_prefix="{prefix}")
print(len(define(db)(organization_id="acme")))
db.close()
"""
    assert run_process(warm, **shared).strip() == "2"
    with rnb.connect(shared["url"], redis=shared["redis"], key_prefix=shared["prefix"]) as db:
        live = define(db).live(organization_id="acme")
        assert live.status == "fresh" and len(live.df) == 2 and live.runs == 0
        live.close()
    run_process(WRITE, id="11", name="while_away", **shared)  # a write while we are away
    with rnb.connect(shared["url"], redis=shared["redis"], key_prefix=shared["prefix"]) as db:
        live = define(db).live(organization_id="acme")
        assert live.status in ("stale", "refreshing") and len(live.df) == 2
        live.wait(10)
        assert live.runs == 1 and "while_away" in set(live.df["name"])


def test_a_live_query_first_served_by_another_kernel_still_refreshes(
        shared: dict[str, str]) -> None:
    """A second kernel whose first answer is the first kernel's cached entry has run nothing,
    so it has inferred no dependency: it learns them from what the entry recorded, or its
    live query would never hear a write to ``agent`` and show the old frame for good."""
    warm = """
from tests.teamhub import define_agents_inferred
db = rnb.connect("{url}", redis="{redis}", key_prefix="{prefix}")
print(len(define_agents_inferred(db)(organization_id="acme")))
db.close()
"""
    assert run_process(warm, **shared).strip() == "2"
    with rnb.connect(shared["url"], redis=shared["redis"], key_prefix=shared["prefix"]) as db:
        live = define_agents_inferred(db).live(organization_id="acme")
        assert live.status == "fresh" and live.runs == 0  # a shared hit: nothing ran here
        run_process(WRITE, id="12", name="after_hit", **shared)
        wait_for(live, lambda df: "after_hit" in set(df["name"]))


def test_identical_queries_across_processes_share_the_cache(shared: dict[str, str]) -> None:
    with rnb.connect(shared["url"], redis=shared["redis"], key_prefix=shared["prefix"]) as db:
        fn = define(db)
        fn(organization_id="acme")
        out = run_process("""
db = rnb.connect("{url}", redis="{redis}", key_prefix="{prefix}")
fn = define(db)
fn(organization_id="acme")
print(fn.stats.runs, fn.stats.hits)
db.close()
""", **shared)
        assert out.split() == ["0", "1"]  # the other process ran nothing: a shared hit


def test_reader_connection_killed_loses_nothing(shared: dict[str, str],
                                                redis_client: object) -> None:
    with rnb.connect(shared["url"], redis=shared["redis"], key_prefix=shared["prefix"]) as db:
        live = define(db).live(organization_id="acme").wait(10)
        killed = 0
        for client in redis_client.client_list():  # type: ignore[attr-defined]
            if client.get("name", "").startswith("reactive_nb-bus"):
                redis_client.client_kill_filter(_id=client["id"])  # type: ignore[attr-defined]
                killed += 1
        assert killed >= 1
        run_process(WRITE, id="12", name="after_kill", **shared)
        wait_for(live, lambda df: "after_kill" in set(df["name"]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own, so it can be stopped and restarted for real."""

    def __init__(self, tmp: Path, persist: bool = False) -> None:
        self.port = _free_port()
        self.tmp = tmp
        self.persist = persist  # keep data across a restart (an outage, not a wipe)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
             "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                threading.Event().wait(0.02)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_restart_converges(sqlite_url: str, private_redis: PrivateRedis,
                                 caplog: pytest.LogCaptureFixture) -> None:
    create(sqlite_url)
    url = private_redis.url
    with rnb.connect(sqlite_url, redis=url) as db:
        live = define(db).live(organization_id="acme").wait(10)
        with caplog.at_level(logging.WARNING):
            private_redis.stop()
            # Redis is down: a local write still refreshes the live query in-process
            db.execute("INSERT INTO agent (id, organization_id, name) VALUES (13, 'acme', 'down')")
            wait_for(live, lambda df: "down" in set(df["name"]))
        assert "Redis is unreachable" in caplog.text
        private_redis.start()  # empty: the stream and versions are gone
        run_process(WRITE.replace("{redis}", url).replace(', key_prefix="{prefix}"', ''),
                    url=sqlite_url, id="14", name="after_restart")
        wait_for(live, lambda df: "after_restart" in set(df["name"]), timeout=20)
        assert live.status in ("fresh", "stale", "refreshing")


def test_manual_cross_language_publish(shared: dict[str, str], redis_client: object) -> None:
    """A writer in another language bumps the version and XADDs: two Redis commands."""
    prefix = shared["prefix"]
    with rnb.connect(shared["url"], redis=shared["redis"], key_prefix=prefix,
                     capture="none") as db:
        live = define(db).live(organization_id="acme").wait(10)
        import sqlite3

        path = shared["url"].removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO agent (id, organization_id, name) VALUES (15, 'acme', 'x')")
        redis_client.hincrby(f"{prefix}:{{default}}:versions", "agent", 1)  # type: ignore[attr-defined]
        redis_client.xadd(f"{prefix}:{{default}}:changes",  # type: ignore[attr-defined]
                          {"tables": "agent", "origin": "cron"}, maxlen=10000, approximate=True)
        wait_for(live, lambda df: len(df) == 3)
        assert isinstance(live.df, pd.DataFrame)


def test_a_tenant_is_followed_only_while_it_has_live_queries(shared: dict[str, str]) -> None:
    with rnb.connect(shared["url"], redis=shared["redis"], key_prefix=shared["prefix"]) as db:
        agents = define(db)
        acme = agents.live(organization_id="acme", tenant="acme").wait(10)
        globex = agents.live(organization_id="globex", tenant="globex").wait(10)
        bus = db.bus
        assert isinstance(bus, RedisBus)
        assert {"acme", "globex"} <= bus.followed
        globex.close()
        assert "globex" not in bus.followed
        assert "acme" in bus.followed
        again = agents.live(organization_id="globex", tenant="globex").wait(10)
        assert "globex" in bus.followed
        acme.close()
        again.close()


def test_write_during_an_outage_is_never_served_stale_after_it(
        sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not installed")
    create(sqlite_url)
    server = PrivateRedis(tmp_path, persist=True)
    server.start()
    try:
        with rnb.connect(sqlite_url, redis=server.url, capture="local") as db:
            agents = define(db)
            assert len(agents(organization_id="acme")) == 2  # cached in Redis
            server.stop()
            with caplog.at_level(logging.INFO):
                db.execute("INSERT INTO agent (id, organization_id, name) "
                           "VALUES (16, 'acme', 'during')")  # the version bump fails
                assert len(agents(organization_id="acme")) == 3  # uncached meanwhile
                server.start()  # the old entry and the old versions are back
                eventually(lambda: not db.health.down, what="the breaker closing")
                hits = agents.stats.hits
                for _ in range(3):
                    assert len(agents(organization_id="acme")) == 3  # never the stale 2
                assert agents.stats.hits > hits  # and the cache is in use again
            store = [r.getMessage() for r in caplog.records if r.name == "reactive_nb"]
            assert sum("Redis is unreachable" in m for m in store) == 1  # once per outage
            assert any("Redis is reachable again" in m for m in store)
    finally:
        server.stop()
