"""Redis faults a user meets: a hung server (stopped with SIGSTOP), a server that is down,
and frames Arrow cannot carry intact. Real servers only: a private redis-server this test
stops and continues, PostgreSQL and Redis on 127.0.0.1. Timing goals are in
``benchmarks/bench_faults.py``; these tests check behaviour."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

import reactive_nb as rnb
from reactive_nb.stores.health import Breaker
from tests.redis_server import (
    RedisServer,
    eventually,
    server_fixture,  # noqa: F401  (the `server` fixture)
)
from tests.teamhub import create
from tests.teamhub import define_agents as define

INSERT = "INSERT INTO agent (id, organization_id, name) VALUES ({id}, 'acme', '{name}')"
#: Redis commands that are not the cache's or the versions' own: the test's, the bus's.
NOT_DATA_PATH = {"info", "config", "client", "hello", "ping", "command", "select"}



@contextlib.contextmanager
def hung(server: RedisServer) -> Iterator[None]:
    """The server process stopped: connections are accepted by the kernel, never answered."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


def data_path_commands(server: RedisServer) -> int:
    """Commands the server ran since CONFIG RESETSTAT, except the test's and the bus's."""
    client = server.client()
    try:
        stats: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    counted = 0
    for name, stat in stats.items():
        command = name.removeprefix("cmdstat_").split("|")[0]
        if command not in NOT_DATA_PATH and not command.startswith("x"):
            counted += int(stat["calls"])
    return counted


def reset_stats(server: RedisServer) -> None:
    client = server.client()
    try:
        client.config_resetstat()
    finally:
        client.close()


def store_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("reactive_nb")]


# -- 1. a hung Redis ---------------------------------------------------------------------------


def test_a_hung_redis_opens_the_breaker_and_calls_stop_asking_it(
        server: RedisServer, sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The fault: every call waited for Redis (10 s, then 5 s each). Now the first timeout
    opens the breaker and later calls are served uncached without a Redis command."""
    calls = 40
    create(sqlite_url)
    with caplog.at_level(logging.INFO, logger="reactive_nb"), \
            rnb.connect(sqlite_url, redis=server.url, capture="local", workers=0) as db:
        agents = define(db)
        assert len(agents(organization_id="acme")) == 2  # cached in Redis
        assert db.health.breaker.closed
        reset_stats(server)
        with hung(server):
            assert len(agents(organization_id="acme")) == 2  # times out once, then...
            assert db.health.breaker.state != "closed"  # ...the breaker is open
            skipped = db.health.breaker.skipped
            for _ in range(calls - 1):
                assert len(agents(organization_id="acme")) == 2  # served uncached
            assert db.health.breaker.skipped - skipped >= calls - 1  # Redis never asked
            assert db.health.down
        eventually(lambda: not db.health.down, what="the breaker closing after SIGCONT")
        # What reached Redis while it was stopped: the call that timed out and the
        # breaker's probes (one every back-off, in the background), plus the probe that
        # closed it; never one command per call.
        assert data_path_commands(server) < calls // 2
        hits = agents.stats.hits
        assert len(agents(organization_id="acme")) == 2
        assert agents.stats.hits == hits + 1  # caching resumed
    records = store_records(caplog)
    assert sum("Redis is unreachable" in r.getMessage() for r in records) == 1
    assert sum("Redis is reachable again" in r.getMessage() for r in records) == 1


def test_a_write_during_a_hang_is_owed_and_never_served_stale(
        server: RedisServer, sqlite_url: str) -> None:
    """A write while Redis hangs: its bump goes to the owed set at once, the probe applies
    it after SIGCONT, and neither this process nor another serves the entry from before."""
    create(sqlite_url)
    with rnb.connect(sqlite_url, redis=server.url, capture="local", workers=0) as a:
        agents = define(a)
        assert len(agents(organization_id="acme")) == 2  # the shared entry, 2 rows
        with hung(server):
            assert len(agents(organization_id="acme")) == 2  # opens the breaker
            skipped = a.health.breaker.skipped
            a.execute(INSERT.format(id=5, name="eve"))  # the bump is refused, owed
            assert a.health.breaker.skipped > skipped
            assert len(agents(organization_id="acme")) == 3  # uncached, fresh
        eventually(lambda: not a.health.down, what="the owed bump replayed after SIGCONT")
        assert list(agents(organization_id="acme")["name"]) == ["ada", "bob", "eve"]
        with rnb.connect(sqlite_url, redis=server.url, capture="local", workers=0) as b:
            assert list(define(b)(organization_id="acme")["name"]) == ["ada", "bob", "eve"]


def test_a_write_during_a_hang_is_published_later_and_warned_once(
        server: RedisServer, sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """While the breaker is open the bus holds a write's change instead of waiting on the
    hung server from the writer's thread (it used to block up to 2.5 s); the reader thread
    sends it to the shared stream after SIGCONT. One warning for the outage across every
    reactive_nb logger (the bus reports at INFO: StoreHealth owns the warning)."""
    create(sqlite_url)
    with caplog.at_level(logging.INFO, logger="reactive_nb"), \
            rnb.connect(sqlite_url, redis=server.url, capture="local", workers=0) as db:
        agents = define(db)
        assert len(agents(organization_id="acme")) == 2
        stream = f"{db.bus.prefix}:{{default}}:changes"
        raw = server.client()
        try:
            before = raw.xlen(stream)
            heard: list[object] = []
            db.bus.subscribe(heard.append)
            with hung(server):
                assert len(agents(organization_id="acme")) == 2  # opens the breaker
                db.execute(INSERT.format(id=6, name="held"))
                assert heard  # delivered in this process at once
                assert not db.health.breaker.closed  # and held for the others
            eventually(lambda: raw.xlen(stream) > before, what="the held change sent")
            fields = raw.xrange(stream)[-1][1]
            assert fields[b"tables"] == b"agent"
        finally:
            raw.close()
    warnings = [r for r in store_records(caplog) if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(" (")[0] for r in warnings] == ["Redis is unreachable"]


def test_the_breaker_half_opens_with_a_doubling_back_off() -> None:
    """closed -> open -> (back-off) half-open: one prober -> open with twice the back-off,
    up to the cap -> closed on success. Driven by an injected clock."""
    now = [0.0]
    breaker = Breaker(first_delay=0.1, max_delay=0.4, clock=lambda: now[0])
    assert breaker.closed and breaker.allows()
    assert breaker.trip() is True  # a new outage
    assert breaker.trip() is False  # the same one
    assert not breaker.allows()
    assert breaker.skipped == 1
    assert not breaker.probe()  # not due yet
    delays = []
    for _ in range(4):
        delays.append(breaker.due_in())
        now[0] += breaker.due_in()
        assert breaker.probe()  # this thread alone may talk to Redis now
        assert breaker.state == "half-open" and breaker.allows()
        assert not breaker.probe()  # one probe at a time
        assert breaker.trip() is False  # the probe failed
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.4])
    now[0] += breaker.due_in()
    assert breaker.probe()
    breaker.reset()
    assert breaker.closed and breaker.allows()
    assert breaker.trip() is True
    assert breaker.due_in() == pytest.approx(0.1)  # a new outage starts at the first delay


# -- 2. one warning per outage --------------------------------------------------------------


def cached_again(agents: Any) -> bool:
    """One call; True when it was served from the cache."""
    hits = agents.stats.hits
    assert len(agents(organization_id="acme")) == 2
    return bool(agents.stats.hits > hits)


def test_redis_down_gives_one_warning_and_one_recovery_message(
        server: RedisServer, sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The fault: 20 calls without a write printed 20 warnings and 19 false "reachable
    again" messages. Counted over every reactive_nb logger (the bus's included)."""
    create(sqlite_url)
    with caplog.at_level(logging.DEBUG, logger="reactive_nb"), \
            rnb.connect(sqlite_url, redis=server.url, capture="local", workers=0) as db:
        agents = define(db)
        agents(organization_id="acme")
        for outage in (1, 2):
            server.stop()
            for _ in range(20):
                assert len(agents(organization_id="acme")) == 2
            server.start()
            eventually(lambda: cached_again(agents), what="caching resumed")
            records = store_records(caplog)
            warnings = [r for r in records if r.levelno >= logging.WARNING]
            assert len(warnings) == outage, [r.getMessage() for r in warnings]
            assert "Redis is unreachable" in warnings[-1].getMessage()
            recovered = [r for r in records if "reachable again" in r.getMessage()]
            assert len(recovered) == outage


# -- 3. frames Arrow cannot carry intact -------------------------------------------------------


PG_TABLE = """CREATE TABLE oddity (
    id INTEGER PRIMARY KEY, addr INET, span INT4RANGE, doc JSONB, tags INTEGER[],
    names TEXT[], day DATE)"""
PG_ROWS = """INSERT INTO oddity VALUES
    (1, '10.0.0.1', '[1,5)', '{"a": 1, "b": [1, 2]}', '{1,2,3}', '{x,NULL}', '2024-01-01'),
    (2, '::1', 'empty', '3', '{}', '{}', NULL),
    (3, NULL, NULL, '{"c": null, "d": "é"}', NULL, NULL, '2024-02-29'),
    (4, '192.168.0.0/16', '(,10]', '[1, "two", {"three": 3.5}]', '{4}', '{"a,b"}', NULL)"""

CACHED = {  # served from the cache on the second call, identical to the first
    "jsonb_mixed": "SELECT id, doc FROM oddity ORDER BY id",
    "jsonb_objects": "SELECT id, doc FROM oddity WHERE jsonb_typeof(doc) = 'object' "
                     "ORDER BY id",
    "int_array": "SELECT id, tags FROM oddity ORDER BY id",
    "text_array": "SELECT id, names FROM oddity ORDER BY id",
    "duplicate_names": "SELECT id, day, id, doc AS day FROM oddity ORDER BY id",
    "dates": "SELECT id, day FROM oddity ORDER BY id",
}
UNCACHED = {  # Arrow cannot carry these values: served uncached, never an error
    "inet": "SELECT id, addr FROM oddity ORDER BY id",
    "int4range": "SELECT id, span FROM oddity ORDER BY id",
}


def element_types(df: pd.DataFrame) -> list[list[str]]:
    return [[type(v).__name__ for v in df.iloc[:, i]] for i in range(df.shape[1])]


def assert_identical(miss: pd.DataFrame, hit: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(hit, miss)
    assert element_types(hit) == element_types(miss)
    assert [list(map(repr, hit.iloc[:, i])) for i in range(hit.shape[1])] == \
        [list(map(repr, miss.iloc[:, i])) for i in range(miss.shape[1])]


@pytest.fixture
def odd_db(pg_url: str, redis_url: str, redis_prefix: str) -> Iterator[rnb.ReactiveDB]:
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text(PG_TABLE))
        conn.execute(text(PG_ROWS))
    engine.dispose()
    with rnb.connect(pg_url, redis=redis_url, key_prefix=redis_prefix, workers=0,
                     capture="local") as db:
        yield db


def query(db: rnb.ReactiveDB, name: str, sql: str) -> Any:
    @db.reactive(name=name, dependencies=["oddity"])
    def run() -> Any:
        return db.read_sql(sql)

    return run


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.parametrize("name", sorted(CACHED))
def test_redis_hit_equals_miss(odd_db: rnb.ReactiveDB, name: str) -> None:
    fn = query(odd_db, name, CACHED[name])
    miss = fn()
    assert fn.stats.hits == 0
    hit = fn()
    assert fn.stats.hits == 1, "served uncached"
    assert_identical(miss, hit)
    if name == "int_array":
        assert isinstance(hit["tags"].iloc[0], list)  # not a numpy array
    if name == "duplicate_names":
        assert list(hit.columns) == ["id", "day", "id", "day"]


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.parametrize("name", sorted(UNCACHED))
def test_a_frame_arrow_cannot_encode_is_served_uncached(
        odd_db: rnb.ReactiveDB, name: str, caplog: pytest.LogCaptureFixture) -> None:
    fn = query(odd_db, name, UNCACHED[name])
    with caplog.at_level(logging.DEBUG, logger="reactive_nb"):
        first, second = fn(), fn()
    assert fn.stats.hits == 0 and fn.stats.runs == 2
    assert_identical(first, second)
    lines = [r for r in store_records(caplog) if "not caching" in r.getMessage()]
    assert len(lines) == 2 and all(r.levelno == logging.DEBUG for r in lines)
    assert not [r for r in store_records(caplog) if r.levelno >= logging.WARNING]


def returning(db: rnb.ReactiveDB, name: str, frame: pd.DataFrame) -> Any:
    @db.reactive(name=name, dependencies=["agent"])
    def build() -> pd.DataFrame:
        return frame.copy()

    return build


@pytest.mark.redis
def test_a_mixed_object_column_round_trips_or_is_uncached(
        redis_url: str, redis_prefix: str, sqlite_url: str) -> None:
    """Frames a handler builds itself: scalars of several types in one column (cached,
    identical), and objects Arrow does not know (served uncached)."""
    frames = {
        "mixed": pd.DataFrame({"v": pd.Series(["a", 1, None, 2.5, True, {"k": [1]}],
                                              dtype=object)}),
        "ints_and_none": pd.DataFrame({"v": pd.Series([1, None, 3], dtype=object)}),
        "nested_lists": pd.DataFrame({"v": pd.Series([[1, [2, 3]], [], None], dtype=object)}),
        "objects": pd.DataFrame({"v": pd.Series([ipaddress.ip_address("10.0.0.1"),
                                                 dt.timedelta(1), "x"], dtype=object)}),
        "tuples": pd.DataFrame({"v": pd.Series([(1, 2), (3,)], dtype=object)}),
    }
    create(sqlite_url)
    with rnb.connect(sqlite_url, redis=redis_url, key_prefix=redis_prefix,
                     workers=0, capture="local") as db:
        for name, frame in frames.items():
            build = returning(db, name, frame)
            miss, hit = build(), build()
            assert_identical(miss, hit)
            assert_identical(frame, hit)
            expected_hits = 0 if name in ("objects", "tuples") else 1
            assert build.stats.hits == expected_hits, name
