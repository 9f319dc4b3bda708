"""Issue 11 benchmark: tenants at scale. 1,000 tenants x 10 live queries with a tenancy
(resolution + access control) next to the same without one: memory and the cost of
dispatching a change; engines opened vs tenants used, and the connections they hold; and
the cost of the access check on every tenant-scoped call (cached), next to no check.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from .common import (
    Settings,
    Table,
    fmt_ratio,
    fmt_time,
    pg_admin,
    pg_available,
    pg_database,
    sqlite_file,
    stats,
    time_call,
    verdict,
)

if TYPE_CHECKING:
    from reactive_nb import ReactiveDB
    from reactive_nb.live.functions import ReactiveFunction

DATABASE = "SELECT database_name FROM organization WHERE id = :tenant"
ACCESS = "SELECT 1 FROM membership WHERE user_id = :user AND organization_id = :tenant"
USER = "bench"
GOAL_CHECK = 50e-6


def tenant_name(i: int) -> str:
    return f"t{i:04d}"


def create_directory(url: str, tenants: int, own: dict[str, str] | None = None) -> None:
    """organization (with database_name), membership (USER is a member of every tenant)
    and three data tables."""
    from sqlalchemy import create_engine, text

    own = own or {}
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE organization (id VARCHAR(20) PRIMARY KEY, "
                              "database_name VARCHAR(80))"))
            conn.execute(text("CREATE TABLE membership (user_id VARCHAR(20), "
                              "organization_id VARCHAR(20), "
                              "PRIMARY KEY (user_id, organization_id))"))
            for name in ("orders", "customers", "products"):
                conn.execute(text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, "
                                  "organization_id VARCHAR(20))"))
            names = [tenant_name(i) for i in range(tenants)]
            conn.execute(text("INSERT INTO organization VALUES (:id, :db)"),
                         [{"id": t, "db": own.get(t)} for t in names])
            conn.execute(text("INSERT INTO membership VALUES (:u, :t)"),
                         [{"u": USER, "t": t} for t in names])
    finally:
        engine.dispose()


def _constant(db: ReactiveDB, i: int, frame: Any) -> ReactiveFunction:
    @db.reactive(name=f"tenants.f{i}", dependencies=["orders", ("customers", "products")[i % 2]],
                 cache=False)
    def handler() -> Any:
        return frame

    return handler


# -- 1. 1,000 tenants x 10 live queries ------------------------------------------------------


class World:
    """One ReactiveDB with 10 functions and a live query of each for every tenant."""

    def __init__(self, url: str, tenants: int, per_tenant: int, with_tenancy: bool) -> None:
        import pandas as pd

        import reactive_nb as rnb

        # min_interval of an hour: a live query marked stale waits (delayed) instead of
        # re-running, so dispatch timings are the marking alone (as in bench_live).
        self.db = rnb.connect(url, capture="none", min_interval=3600, workers=2)
        self.tenancy = (self.db.tenancy(database=DATABASE, access=ACCESS, user=USER)
                        if with_tenancy else None)
        frame = pd.DataFrame({"x": [1, 2, 3]})
        self.fns = [_constant(self.db, i, frame) for i in range(per_tenant)]
        self.names = [tenant_name(j) for j in range(tenants)]
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        started = time.perf_counter()
        self.lives = [fn.live(tenant=t) for t in self.names for fn in self.fns]
        for live in self.lives:
            live.wait(300)
        self.built = time.perf_counter() - started
        gc.collect()
        self.memory = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()

    def dispatch(self, tenant: str) -> None:
        """A committed write to ``orders`` as ``tenant``: bump, publish, mark 10 stale."""
        self.db.recorder.committed(tenant, frozenset({"orders"}))

    def close(self) -> None:
        self.db.close()


def scale(settings: Settings) -> Table:
    tenants, per_tenant = settings.pick(1_000, 200), 10
    table = Table(
        f"Tenants 1 · {tenants:,} tenants x {per_tenant} live queries: memory and dispatch "
        "per change (goal: the tenancy adds ≤ 10% to both)",
        ["configuration", "live queries", "memory (traced)", "per live query",
         "build + first runs", "dispatch p50", "dispatch p99", "dispatch mean",
         "this / baseline (p50)", "result"])
    with sqlite_file() as (url, _):
        create_directory(url, tenants)
        base = World(url, tenants, per_tenant, with_tenancy=False)
        try:
            ten = World(url, tenants, per_tenant, with_tenancy=True)
            try:
                ours, theirs = [], []
                gc.collect()
                for tenant in base.names:  # interleaved, one change per tenant each
                    theirs.append(time_call(partial(base.dispatch, tenant)))
                    ours.append(time_call(partial(ten.dispatch, tenant)))
                stale = sum(1 for live in ten.lives if live.status == "stale")
                assert ten.tenancy is not None
                ten.db.execute("DELETE FROM membership WHERE organization_id = :t",
                               t=ten.names[0])
                started = time.perf_counter()
                revoked = ten.tenancy.recheck(everything=True)
                recheck = time.perf_counter() - started
                queries = ten.tenancy.stats()["access_queries"]
                rows = [("baseline: no tenancy (open tenant registry)", base, theirs),
                        ("db.tenancy(database=, access=): resolution + access checks",
                         ten, ours)]
                base_p50 = stats(theirs).p50
                for label, world, samples in rows:
                    s = stats(samples)
                    ratio = s.p50 / base_p50
                    memory_ratio = world.memory / base.memory
                    table.add(label, f"{len(world.lives):,}", f"{world.memory / 2**20:.1f} MB",
                              f"{world.memory / len(world.lives) / 1024:.2f} KB",
                              f"{world.built:.1f} s", fmt_time(s.p50), fmt_time(s.p99),
                              fmt_time(s.mean), fmt_ratio(ratio),
                              "—" if world is base else
                              verdict(ratio <= 1.10 and memory_ratio <= 1.10))
            finally:
                ten.close()
        finally:
            base.close()
    table.note(f"Dispatch = `db.recorder.committed(tenant, {{'orders'}})` for each of the "
               f"{tenants:,} tenants once, both configurations interleaved: a version bump, "
               "the publication, the scheduler marking that tenant's 10 live queries stale, "
               "and (with the tenancy) its bus subscriber, which ignores tables the directory "
               f"does not read. After the run {stale:,} live queries were stale.")
    table.note("Memory: `tracemalloc` (Python allocations) from before the first live query "
               "to after every one ran once; with the tenancy it includes the resolution "
               "and access decisions cached for each tenant. SQLite main database, "
               "`capture='none'`, handlers return a constant 3-row frame (`cache=False`).")
    table.note(f"A membership change re-checks every tenant with live queries here: "
               f"`recheck()` took {recheck * 1e3:.0f} ms for {tenants:,} tenants "
               f"({queries:,} access queries so far, one connection per re-check) and "
               f"stopped {len(revoked)} (the tenant whose membership was deleted). It runs "
               "on the tenancy's own thread, never in the writer's.")
    return table


# -- 2. engines opened vs tenants used --------------------------------------------------------


def _connections(names: list[str]) -> int:
    import psycopg

    from .common import PG_HOST, PG_PORT

    with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s)",
                           (names,)).fetchone()
    return int(row[0]) if row else 0


def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> float:
    """Seconds until ``predicate()`` held (the server closes backends on its own time)."""
    started = time.perf_counter()
    while not predicate() and time.perf_counter() - started < timeout:
        time.sleep(0.05)
    return time.perf_counter() - started


def engines(settings: Settings) -> Table:
    import reactive_nb as rnb

    tenants, own_count, pool_size = 1_000, settings.pick(40, 8), 2
    shared_used = 3 * own_count
    table = Table(
        f"Tenants 2 · engines opened vs tenants used: {tenants:,} tenants, {own_count} with "
        "a database of their own (goal: engines = own databases used; connections ≤ "
        "pool size x tenants in use; 0 after the idle timeout)",
        ["measure", "value", "bound", "result"])
    prefix = f"rnb_bench_{uuid.uuid4().hex[:8]}"
    own = {tenant_name(i): f"{prefix}_{tenant_name(i)}" for i in range(own_count)}
    with pg_database() as url:
        created: list[str] = []
        try:
            for name in own.values():
                pg_admin(f'CREATE DATABASE "{name}"')
                created.append(name)
            create_directory(url, tenants, own)
            with rnb.connect(url, workers=0, capture="local") as db:
                tenancy = db.tenancy(database=DATABASE, access=ACCESS, user=USER,
                                     pool_size=pool_size, max_overflow=0)
                used = list(own) + [tenant_name(own_count + i) for i in range(shared_used)]
                cold, warm = [], []
                for tenant in used:
                    cold.append(time_call(lambda t=tenant: tenancy.open(t).read_sql("SELECT 1")))
                    warm.append(time_call(lambda t=tenant: tenancy.open(t).read_sql("SELECT 1")))
                opened = tenancy.stats()["engines_opened"]
                held = _connections(created)
                tenancy.engines.idle_timeout = 0
                tenancy.sweep()
                released = _until(lambda: _connections(created) == 0)
                after = _connections(created)
        finally:
            for name in created:
                pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    table.add("tenants in the directory", f"{tenants:,}", "—", "—")
    table.add("tenants used (open + one query each)",
              f"{len(used)} ({own_count} own databases, {shared_used} shared)", "—", "—")
    table.add("engines opened", str(opened), f"= {own_count} (own databases used)",
              verdict(opened == own_count))
    table.add("connections to tenant databases while in use", str(held),
              f"≤ {pool_size} x {own_count} = {pool_size * own_count}",
              verdict(held <= pool_size * own_count))
    table.add("connections after the idle timeout (`sweep()`)", str(after),
              f"0 (gone {released:.2f} s after the sweep)", verdict(after == 0))
    table.add("first use of a tenant (lookup, access check, engine + probe connection)",
              fmt_time(statistics.median(cold)), "—", "—")
    table.add("next use (everything cached, pooled connection)",
              fmt_time(statistics.median(warm)), "—", "—")
    table.note("The shared-database tenants open no engine: their queries run on the main "
               "engine (with their tenant set, for RLS, when `rls=True`). Each used tenant "
               "runs `tenancy.open(t).read_sql('SELECT 1')` twice; medians shown.")
    return table


# -- 3. the access check per call ------------------------------------------------------------


def _per_call(fn: Callable[[], object], calls: int, rounds: int) -> list[float]:
    """Seconds per call, one sample per round of ``calls`` calls."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - started) / calls)
    return samples


def _paired(a: Callable[[], object], b: Callable[[], object], calls: int,
            rounds: int) -> tuple[list[float], list[float]]:
    """``_per_call`` of ``a`` and ``b``, one round each in turn (alternating which goes
    first), so a burst of load from elsewhere hits both alike."""
    first: list[float] = []
    second: list[float] = []
    for i in range(rounds):
        order = [(a, first), (b, second)] if i % 2 == 0 else [(b, second), (a, first)]
        for fn, samples in order:
            samples.extend(_per_call(fn, calls, 1))
    return first, second


def _orders(db: ReactiveDB) -> ReactiveFunction:
    @db.reactive(name="orders", dependencies=["orders"])
    def orders() -> Any:
        return db.read_sql("SELECT id FROM orders")

    return orders


def access_check(settings: Settings) -> Table:
    import reactive_nb as rnb

    tenants, calls, rounds = 1_000, 200, settings.pick(200, 40)
    table = Table(
        "Tenants 3 · cost of the tenant check on every tenant-scoped call "
        f"(goal: cached access check ≤ {GOAL_CHECK * 1e6:.0f} µs)",
        ["what is timed", "p50 per call", "p99 per call", "goal", "result",
         "this - baseline (p50)"])
    with sqlite_file() as (url, _):
        create_directory(url, tenants)
        with rnb.connect(url, workers=0, capture="none") as plain, \
                rnb.connect(url, workers=0, capture="none") as checked, \
                rnb.connect(url, workers=0, capture="none") as uncached:
            checked.tenancy(database=DATABASE, access=ACCESS, user=USER)
            uncached.tenancy(database=DATABASE, access=ACCESS, user=USER, access_ttl=0)
            names = [tenant_name(j) for j in range(tenants)]
            cycle = iter(names * (rounds * calls * 4 // tenants + 2))
            for name in names:  # warm every decision (the cached case)
                checked.check_tenant(name)
            fns = {"plain": (plain, _orders(plain)), "checked": (checked, _orders(checked))}
            for db, fn in fns.values():
                with db.tenant(names[0]):
                    fn()  # cached from now on

            def call(label: str) -> None:
                db, fn = fns[label]
                with db.tenant(names[0]):
                    fn()

            base, ours = _paired(lambda: plain.check_tenant(next(cycle)),
                                 lambda: checked.check_tenant(next(cycle)), calls, rounds)
            cold = _per_call(lambda: uncached.check_tenant(next(cycle)), 20,
                             settings.pick(20, 5))
            base_call, our_call = _paired(partial(call, "plain"), partial(call, "checked"),
                                          calls // 4, rounds)
    b, o, c = stats(base), stats(ours), stats(cold)
    bc, oc = stats(base_call), stats(our_call)
    table.add("baseline: `db.check_tenant(t)` without a tenancy (name validation only)",
              fmt_time(b.p50), fmt_time(b.p99), "—", "—", "—")
    table.add("`db.check_tenant(t)` with `access=`: resolution + access decision cached",
              fmt_time(o.p50), fmt_time(o.p99), f"≤ {GOAL_CHECK * 1e6:.0f} µs",
              verdict(o.p50 <= GOAL_CHECK), fmt_time(o.p50 - b.p50))
    table.add("the same with `access_ttl=0` (a query per check: what the cache saves)",
              fmt_time(c.p50), fmt_time(c.p99), "—", "—", fmt_time(c.p50 - b.p50))
    table.add("baseline: a cached reactive call in `db.tenant(t)`, no tenancy",
              fmt_time(bc.p50), fmt_time(bc.p99), "—", "—", "—")
    table.add("a cached reactive call in `db.tenant(t)` with the tenancy (checked twice: "
              "entering the block, and the call)", fmt_time(oc.p50), fmt_time(oc.p99), "—",
              "—", fmt_time(oc.p50 - bc.p50))
    table.note(f"{tenants:,} tenants, each check names the next one in turn; a sample is the "
               f"mean of {calls} calls ({calls // 4} for the reactive calls), {rounds} "
               "samples per row, baseline and tenancy alternating round by round. SQLite "
               "main database.")
    return table


def run(settings: Settings) -> Iterator[Table]:
    yield access_check(settings)
    yield scale(settings)
    if pg_available():
        yield engines(settings)
    else:
        table = Table("Tenants 2 · engines opened vs tenants used", ["measure", "value"])
        table.note("PostgreSQL is not reachable: skipped.")
        yield table
