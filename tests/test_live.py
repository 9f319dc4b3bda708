"""Live queries: background refresh, precision, coalescing, priorities, failures, shutdown."""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Iterator

import pandas as pd
import pytest

import reactive_nb as rnb
from tests.conftest import our_threads
from tests.teamhub import create


@pytest.fixture
def db(db_url: str) -> Iterator[rnb.ReactiveDB]:
    create(db_url)
    database = rnb.connect(db_url, relations={"agent": ["organization"]})
    yield database
    database.close()


def agents_fn(db: rnb.ReactiveDB, calls: list[str] | None = None) -> rnb.ReactiveFunction:
    @db.reactive(name="agents.getAll", dependencies=["agent"])
    def agents(organization_id: str) -> pd.DataFrame:
        if calls is not None:
            calls.append(organization_id)
        return db.read_sql("SELECT id, name FROM agent WHERE organization_id = :o ORDER BY id",
                           o=organization_id)

    return agents


def test_live_refreshes_after_a_write(db: rnb.ReactiveDB) -> None:
    agents = agents_fn(db)
    live = agents.live(organization_id="acme", priority="high")
    statuses: list[str] = []
    live.observe(lambda change: statuses.append(change["new"]), names=["status"])
    live.wait(10)
    assert list(live.df["name"]) == ["ada", "bob"]
    assert live.status == "fresh" and live.error is None and live.runs == 1
    first_update = live.updated_at
    db.execute("INSERT INTO agent (id, organization_id, name) VALUES (7, 'acme', 'eve')")
    live.wait(10)
    assert list(live.df["name"]) == ["ada", "bob", "eve"]
    assert live.runs == 2 and live.updated_at > first_update
    assert statuses[-3:] == ["stale", "refreshing", "fresh"]
    live.close()


def test_unrelated_write_refreshes_nothing(db: rnb.ReactiveDB) -> None:
    calls: list[str] = []
    live = agents_fn(db, calls).live(organization_id="acme").wait(10)
    db.execute("INSERT INTO tool (id, name) VALUES (5, 'x')")
    db.execute("INSERT INTO agent (id, organization_id, name) VALUES (8, 'acme', 'z')")
    live.wait(10)
    assert calls == ["acme", "acme"] and live.runs == 2


def test_starts_with_cached_frame(db: rnb.ReactiveDB) -> None:
    calls: list[str] = []
    agents = agents_fn(db, calls)
    agents(organization_id="acme")
    live = agents.live(organization_id="acme")
    assert live.status == "fresh" and len(live.df) == 2  # at once, no run
    assert calls == ["acme"] and live.runs == 0
    db.execute("UPDATE agent SET name = 'ADA' WHERE id = 1")
    live.wait(10)
    assert live.df["name"].iloc[0] == "ADA" and calls == ["acme", "acme"]


def test_stale_cache_entry_shown_then_refreshed(db: rnb.ReactiveDB) -> None:
    gate = threading.Event()
    calls: list[str] = []

    @db.reactive(name="slow", dependencies=["agent"])
    def slow(organization_id: str) -> pd.DataFrame:
        calls.append(organization_id)
        if len(calls) > 1:
            assert gate.wait(10)
        return db.read_sql("SELECT id FROM agent WHERE organization_id = :o", o=organization_id)

    slow(organization_id="acme")
    db.execute("INSERT INTO agent (id, organization_id, name) VALUES (9, 'acme', 'n')")
    live = slow.live(organization_id="acme")
    assert len(live.df) == 2 and live.status in ("stale", "refreshing")
    gate.set()
    live.wait(10)
    assert len(live.df) == 3


def test_same_key_shares_one_run(db: rnb.ReactiveDB) -> None:
    calls: list[str] = []
    agents = agents_fn(db, calls)
    one = agents.live(organization_id="acme").wait(10)
    two = agents.live(organization_id="acme").wait(10)
    db.execute("INSERT INTO agent (id, organization_id, name) VALUES (7, 'acme', 'eve')")
    one.wait(10)
    two.wait(10)
    assert calls == ["acme", "acme"]
    assert len(one.df) == len(two.df) == 3


def test_precision_over_many_live_queries(db: rnb.ReactiveDB) -> None:
    tables = [f"t{i}" for i in range(10)]
    for table in tables:
        db.execute(f"CREATE TABLE {table} (v INTEGER)")
    rng = random.Random(7)
    runs: dict[str, int] = {}
    lives = []
    for i in range(50):
        deps = rng.sample(tables, rng.randint(1, 3))

        def handler(_name: str = f"q{i}", _deps: tuple[str, ...] = tuple(deps)) -> pd.DataFrame:
            runs[_name] = runs.get(_name, 0) + 1
            union = " UNION ALL ".join(f"SELECT COUNT(*) AS n FROM {t}" for t in _deps)
            return db.read_sql(union)

        fn = db.reactive(name=f"q{i}", dependencies=deps)(handler)
        lives.append((fn, set(deps), fn.live()))
    for _, _, live in lives:
        live.wait(10)
    for _ in range(20):
        written = set(rng.sample(tables, rng.randint(1, 2)))
        before = dict(runs)
        with db.engine.begin() as conn:
            for table in written:
                conn.exec_driver_sql(f"INSERT INTO {table} (v) VALUES (1)")
        for _, _, live in lives:
            live.wait(10)
        changed = {name for name in runs if runs[name] != before.get(name)}
        expected = {fn.name for fn, deps, _ in lives if deps & written}
        assert changed == expected
        assert all(runs[n] == before[n] + 1 for n in changed)


def test_write_while_running_is_not_lost(db: rnb.ReactiveDB) -> None:
    reading, written = threading.Event(), threading.Event()
    calls: list[int] = []

    @db.reactive(dependencies=["agent"])
    def count() -> pd.DataFrame:
        calls.append(1)
        df = db.read_sql("SELECT COUNT(*) AS n FROM agent")
        if len(calls) == 2:
            reading.set()
            assert written.wait(10)
        return df

    live = count.live().wait(10)
    db.execute("INSERT INTO agent (id, organization_id, name) VALUES (20, 'acme', 'a')")
    assert reading.wait(10)
    db.execute("INSERT INTO agent (id, organization_id, name) VALUES (21, 'acme', 'b')")
    written.set()
    live.wait(10)
    assert int(live.df["n"].iloc[0]) == 5 and len(calls) == 3


def test_burst_is_coalesced(pg_url: str) -> None:
    create(pg_url)
    with rnb.connect(pg_url, min_interval=0.05) as db:
        count = db.reactive(name="count", dependencies=["audit"])(
            lambda: db.read_sql("SELECT COUNT(*) AS n FROM audit"))
        other = db.reactive(name="other", dependencies=["tool"])(
            lambda: db.read_sql("SELECT 1 AS x"))
        live, bystander = count.live().wait(10), other.live().wait(10)
        start = time.monotonic()
        with db.engine.connect() as conn:
            # coalescing is under test, not durability: commits need not wait for fsync
            conn.exec_driver_sql("SET synchronous_commit = off")
            conn.commit()
            for i in range(10_000):
                conn.exec_driver_sql(f"INSERT INTO audit (id, note) VALUES ({i}, 'n')")
                conn.commit()
        duration = time.monotonic() - start
        live.wait(30)
        bound = duration / 0.05 + 1
        assert int(live.df["n"].iloc[0]) == 10_000
        assert 1 < live.runs - 1 <= bound + 2, (live.runs, duration)
        assert bystander.runs == 1


def test_priority_order_with_one_worker(sqlite_url: str) -> None:
    create(sqlite_url)
    gate, blocking = threading.Event(), threading.Event()
    order: list[str] = []
    with rnb.connect(sqlite_url, workers=1, min_interval=0) as db:

        @db.reactive(name="blocker", dependencies=["audit"])
        def blocker() -> pd.DataFrame:
            blocking.set()
            assert gate.wait(10)
            return pd.DataFrame({"x": [1]})

        def make(name: str) -> rnb.ReactiveFunction:
            def handler() -> pd.DataFrame:
                order.append(name)
                return db.read_sql("SELECT 1 AS x")
            return db.reactive(name=name, dependencies=["agent"])(handler)

        fns = {name: make(name) for name in ["low", "normal", "high", "hidden_high",
                                             "explicit_low", "explicit_first"]}
        hold = blocker.live()
        assert blocking.wait(10)  # the only worker is busy: everything below queues
        db.priorities(["explicit_first", "explicit_low"])
        lives = [fns["low"].live(priority="low"), fns["normal"].live(),
                 fns["high"].live(priority="high"),
                 fns["explicit_low"].live(priority="low"),
                 fns["explicit_first"].live(priority="low")]
        hidden = fns["hidden_high"].live(priority="high")
        hidden.set_visible("widget-1", False)
        gate.set()
        for live in [hold, hidden, *lives]:
            live.wait(10)
        assert order == ["explicit_first", "explicit_low", "high", "normal", "low",
                         "hidden_high"]


def test_failure_keeps_frame_and_recovers(db: rnb.ReactiveDB) -> None:
    fail = threading.Event()
    errors_seen = threading.Event()

    @db.reactive(dependencies=["agent"])
    def flaky() -> pd.DataFrame:
        if fail.is_set():
            raise RuntimeError("database went away\nsecond line")
        return db.read_sql("SELECT COUNT(*) AS n FROM agent")

    live = flaky.live().wait(10)
    good = live.df
    live.observe(lambda c: c["new"] == "error" and errors_seen.set(), names=["status"])
    fail.set()
    db.execute("INSERT INTO agent (id, organization_id, name) VALUES (30, 'acme', 'x')")
    assert errors_seen.wait(10)
    assert live.status == "error" and live.df is good
    assert live.error == "RuntimeError: database went away"  # one line: the first
    fail.clear()  # the back-off retry succeeds without another write
    live.wait(10)
    assert int(live.df["n"].iloc[0]) == 4 and live.error is None


def test_first_run_failure_then_wait_reports_error(db: rnb.ReactiveDB) -> None:
    @db.reactive(dependencies=["agent"])
    def broken() -> pd.DataFrame:
        return db.read_sql("SELECT * FROM no_such_table")

    live = broken.live()
    with pytest.raises(TimeoutError, match="no_such_table"):
        live.wait(1.0)
    assert live.df is None and live.status == "error"


def test_explicit_refresh_bypasses_cache(db: rnb.ReactiveDB) -> None:
    calls: list[str] = []
    live = agents_fn(db, calls).live(organization_id="acme").wait(10)
    live.refresh()
    live.wait(10)
    assert calls == ["acme", "acme"] and live.runs == 2


def test_garbage_collected_live_query_unregisters(db_url: str) -> None:
    create(db_url)
    with rnb.connect(db_url, workers=0) as db:  # driven step by step, no worker threads
        agents = agents_fn(db)
        live = agents.live(organization_id="acme")
        group_key = live.group_key
        assert db.scheduler.run_until_idle() == 1
        assert live.status == "fresh" and agents.stats.runs == 1
        assert db.scheduler.state_of(group_key)["members"] == 1
        del live
        gc.collect()
        db.execute("INSERT INTO agent (id, organization_id, name) VALUES (40, 'acme', 'x')")
        assert db.scheduler.run_until_idle() == 0  # nobody is watching: nothing re-runs
        assert agents.stats.runs == 1
        assert db.scheduler.state_of(group_key) == {"state": "closed", "members": 0}


def test_close_stops_every_thread(db_url: str) -> None:
    create(db_url)
    db = rnb.connect(db_url)
    agents_fn(db).live(organization_id="acme").wait(10)
    assert our_threads()
    db.close()
    assert our_threads() == []
    with pytest.raises(rnb.ClosedError):
        db.read_sql("SELECT 1")


def test_tenants_refresh_independently(db: rnb.ReactiveDB) -> None:
    calls: list[str] = []
    agents = agents_fn(db, calls)
    acme = agents.live(organization_id="acme", tenant="acme").wait(10)
    globex = agents.live(organization_id="globex", tenant="globex").wait(10)
    with db.tenant("acme"):
        db.execute("INSERT INTO agent (id, organization_id, name) VALUES (50, 'acme', 'q')")
    acme.wait(10)
    globex.wait(10)
    assert acme.runs == 2 and globex.runs == 1 and len(acme.df) == 3


def test_dropped_live_queries_are_released_without_any_change(sqlite_url: str) -> None:
    """Groups, frames and followed tenants of garbage-collected live queries go away with
    no write needed (the reaper), step-driven here."""
    create(sqlite_url)
    with rnb.connect(sqlite_url, workers=0) as db:
        agents = agents_fn(db)
        lives = [agents.live(organization_id="acme", tenant=f"t{i}") for i in range(200)]
        assert db.scheduler.run_until_idle() == 200
        assert len(db.scheduler.tenants()) == 200
        del lives
        gc.collect()
        assert db.scheduler.reap() == 200
        assert db.scheduler.tenants() == []
        assert db.scheduler.members() == []


def test_worker_threads_reap_dropped_live_queries(sqlite_url: str) -> None:
    create(sqlite_url)
    with rnb.connect(sqlite_url) as db:
        live = agents_fn(db).live(organization_id="acme", tenant="acme").wait(10)
        assert db.scheduler.tenants() == ["acme"]
        db.scheduler.reaped.clear()
        del live
        gc.collect()
        assert db.scheduler.reaped.wait(10)  # an idle worker released it by itself
        assert db.scheduler.tenants() == []


def test_close_closes_live_queries_and_their_widgets(sqlite_url: str) -> None:
    create(sqlite_url)
    db = rnb.connect(sqlite_url)
    live = agents_fn(db).live(organization_id="acme").wait(10)
    live.widget()  # starts the widget machinery
    db.close()
    assert live.closed
    assert our_threads() == []  # no worker, no bus reader, no widget flusher left


def test_an_update_overtaken_by_a_later_run_is_not_applied(sqlite_url: str) -> None:
    """The scheduler decides under its lock but delivers after releasing it, from whatever
    thread made the decision: a write's "stale" (with the old frame) can reach a live query
    after the worker's "fresh" (with the new one). Applied in arrival order, the query would
    show "stale" and the old frame for good, while the scheduler thinks it is fresh. Here
    the writer's thread is held inside its delivery to the first of two members while the
    main thread runs the refresh; the other member gets the "stale" last."""
    create(sqlite_url)
    with rnb.connect(sqlite_url, workers=0, min_interval=0) as db:
        agents = agents_fn(db)
        lives = [agents.live(organization_id="acme"), agents.live(organization_id="acme")]
        db.scheduler.run_until_idle()
        assert [live.status for live in lives] == ["fresh", "fresh"]
        holding, release = threading.Event(), threading.Event()
        writer: list[int] = []

        def hold(change: dict[str, object]) -> None:
            if (change["new"] == "stale" and threading.get_ident() in writer
                    and not holding.is_set()):
                holding.set()
                assert release.wait(30)

        for live in lives:
            live.observe(hold, names=["status"])

        def write() -> None:
            writer.append(threading.get_ident())
            db.execute("INSERT INTO agent (id, organization_id, name) VALUES (9, 'acme', 'x')")

        thread = threading.Thread(target=write)
        thread.start()
        assert holding.wait(30)  # "stale" delivered to one member, not yet to the other
        assert db.scheduler.run_until_idle() == 1  # the refresh, delivered to both
        release.set()
        thread.join(30)
        for live in lives:
            assert live.status == "fresh", live.status
            assert list(live.df["name"]) == ["ada", "bob", "x"]


def test_inputs_named_like_options_are_inputs_when_given_as_a_mapping(
        sqlite_url: str) -> None:
    """``priority`` and ``tenant`` are options of ``fn.live``; a handler may still have
    inputs of those names: given as a mapping they are inputs, as keywords options."""
    create(sqlite_url)
    with rnb.connect(sqlite_url, workers=0, min_interval=0) as db:
        @db.reactive(dependencies=["agent"])
        def ranked(priority: int, tenant: str) -> pd.DataFrame:
            return db.read_sql("SELECT id FROM agent WHERE id <= :p AND organization_id = :t "
                               "ORDER BY id", p=priority, t=tenant)

        live = ranked.live({"priority": 2, "tenant": "acme"}, priority="high")
        db.scheduler.run_until_idle()
        assert live.inputs == {"priority": 2, "tenant": "acme"}
        assert live.priority == "high" and live.tenant == "default"
        assert list(live.df["id"]) == [1, 2]
        with pytest.raises(rnb.InputError, match="priority: missing; tenant: missing"):
            ranked.live(priority="low", tenant="acme")  # as keywords they are the options


def test_a_new_frame_is_set_without_comparing_it_to_the_old_one(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """traitlets tells whether a trait changed with ``old == new``: for two frames of one
    shape that compares every cell, on every update, only to find the answer is no bool.
    A live query tells frames apart by identity instead, and still notifies."""
    create(sqlite_url)
    with rnb.connect(sqlite_url, workers=0, min_interval=0) as db:
        live = agents_fn(db).live(organization_id="acme")
        db.scheduler.run_until_idle()
        shown: list[pd.DataFrame] = []
        live.observe(lambda change: shown.append(change["new"]), names=["df"])
        compared: list[object] = []
        equals = pd.DataFrame.__eq__

        def counted(frame: pd.DataFrame, other: object) -> object:
            compared.append(other)
            return equals(frame, other)

        monkeypatch.setattr(pd.DataFrame, "__eq__", counted)
        db.execute("UPDATE agent SET name = 'ada2' WHERE name = 'ada'")  # same shape
        assert db.scheduler.run_until_idle() == 1
        monkeypatch.undo()
        assert len(shown) == 1 and list(shown[0]["name"]) == ["ada2", "bob"]
        assert live.df is shown[0]
        assert compared == []
