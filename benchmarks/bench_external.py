"""Issue 4 benchmark: writes committed by a client that does not use reactive_nb (plain
psycopg, plain sqlite3, in another process) reaching ``live.df`` through PostgreSQL
NOTIFY and the SQLite poller, next to 1-second polling; what the capture triggers
add to a 100,000-row bulk insert; and what an idle SQLite poller costs in CPU.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

from .bench_live import (
    CHECK,
    QUERY,
    Latency,
    Watch,
    create_ticks,
    latency_table,
    max_id,
    measure_bare,
)
from .common import (
    Contender,
    CpuWatch,
    LatencyRecorder,
    PollingBaseline,
    Settings,
    Table,
    finish,
    fmt_pct,
    fmt_time,
    interleave,
    median_ratio,
    pg_available,
    pg_conninfo,
    pg_database,
    spawn_python,
    sqlite_file,
    stats,
    verdict,
)

BULK_ROWS = 100_000
NAN = float("nan")
IDLE_CPU_GOAL = 0.01
"""An idle SQLite poller may use under 1% of one core."""

_PG_WRITER = """
import sys, time
import psycopg

WARM_UP = 3
conninfo, n, spacing = sys.argv[1:4]
with psycopg.connect(conninfo, autocommit=True) as conn:
    start = time.monotonic()
    for i in range(-WARM_UP, int(n)):  # warm-up writes carry ts = -1: not timed
        delay = start + (i + WARM_UP) * float(spacing) - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the writes, not waiting for a result
        conn.execute("INSERT INTO ticks (ts, note) VALUES (%s, %s)",
                     (time.time() if i >= 0 else -1.0, f"ext-{i}"))
"""

_SQLITE_WRITER = """
import sys, time
import sqlite3

WARM_UP = 3
path, n, spacing = sys.argv[1:4]
conn = sqlite3.connect(path, isolation_level=None, timeout=10)  # autocommit
start = time.monotonic()
for i in range(-WARM_UP, int(n)):  # warm-up writes carry ts = -1: not timed
    delay = start + (i + WARM_UP) * float(spacing) - time.monotonic()
    if delay > 0:
        time.sleep(delay)  # pacing the writes, not waiting for a result
    conn.execute("INSERT INTO ticks (ts, note) VALUES (?, ?)",
                 (time.time() if i >= 0 else -1.0, f"ext-{i}"))
conn.close()
"""


def external(url: str, backend: str, writes: int, spacing: float, script: str,
             target: str, settings: Settings) -> Latency:
    """A live query in this process, a plain-driver writer in a subprocess."""
    import reactive_nb as rnb

    create_ticks(url)
    how = ("plain psycopg, NOTIFY → listener" if backend == "PostgreSQL"
           else "plain sqlite3, trigger → change table → poller (20 ms)")
    result = measure_bare(url, f"external writer, {backend}: {how}", writes, spacing,
                          settings)
    db = rnb.connect(url)
    try:
        db.install_triggers(["ticks"])
        watch = Watch(db, url, writes)
        proc = spawn_python(script, target, str(writes), str(spacing))
        try:
            watch.finish(result, timeout=writes * spacing + 60)
        finally:
            finish(proc, timeout=60)
    finally:
        db.close()
    return result


# -- trigger overhead ----------------------------------------------------------------------


@dataclass
class Overhead:
    backend: str
    kind: str
    without: list[float]
    with_: list[float]


def _pg_bulk(url: str, repeat: int) -> list[Overhead]:
    import psycopg
    from sqlalchemy import create_engine

    from reactive_nb.capture import postgres

    engine = create_engine(url)
    try:
        with engine.begin() as setup:
            for table in ("bulk_plain", "bulk_trig", "bulk_tenant"):
                setup.exec_driver_sql(f"CREATE TABLE {table} (id BIGINT NOT NULL, "
                                     "org TEXT NOT NULL, qty INTEGER NOT NULL, note TEXT NOT NULL)")
        postgres.install_triggers(engine, ["bulk_trig"])
        postgres.install_triggers(engine, ["bulk_tenant"], "org")
    finally:
        engine.dispose()
    with psycopg.connect(pg_conninfo(url)) as conn:

        def insert(table: str) -> None:
            conn.execute(f"INSERT INTO {table} SELECT g, 'org-' || (g % 100), g % 1000, "
                         f"md5(g::text) FROM generate_series(1, {BULK_ROWS}) g")
            conn.commit()

        def empty(table: str) -> None:
            conn.execute(f"TRUNCATE {table}")
            conn.commit()

        timed = interleave({t: Contender(partial(insert, t), partial(empty, t))
                            for t in ("bulk_plain", "bulk_trig", "bulk_tenant")}, repeat)
    return [
        Overhead("PostgreSQL", "statement-level trigger, one NOTIFY per statement",
                 timed["bulk_plain"], timed["bulk_trig"]),
        Overhead("PostgreSQL", "with `tenant_column`: transition table, DISTINCT tenants "
                 "(100 here) in the payload", timed["bulk_plain"], timed["bulk_tenant"]),
    ]


def _sqlite_bulk(url: str, path: str, repeat: int) -> list[Overhead]:
    from sqlalchemy import create_engine

    from reactive_nb.capture import sqlite as sqlite_capture

    with sqlite3.connect(path) as setup:
        for table in ("bulk_plain", "bulk_trig"):
            setup.execute(f"CREATE TABLE {table} (id INTEGER NOT NULL, org TEXT NOT NULL, "
                          "qty INTEGER NOT NULL, note TEXT NOT NULL)")
    setup.close()
    engine = create_engine(url)
    try:
        sqlite_capture.install_triggers(engine, ["bulk_trig"])
    finally:
        engine.dispose()
    conn = sqlite3.connect(path)
    try:
        def insert(table: str) -> None:
            conn.execute(f"INSERT INTO {table} (id, org, qty, note) "
                         "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                         f"WHERE x < {BULK_ROWS}) "
                         "SELECT x, 'org-' || (x % 100), x % 1000, printf('note-%d', x) FROM c")
            conn.commit()

        def empty(table: str) -> None:
            conn.execute(f"DELETE FROM {table}")
            conn.commit()

        timed = interleave({t: Contender(partial(insert, t), partial(empty, t))
                            for t in ("bulk_plain", "bulk_trig")}, repeat)
    finally:
        conn.close()
    return [Overhead("SQLite", "row triggers upserting `_reactive_nb_changes`",
                     timed["bulk_plain"], timed["bulk_trig"])]


def overhead_table(results: list[Overhead], repeat: int, cpu: CpuWatch) -> Table:
    table = Table(f"External 2 · trigger overhead on a {BULK_ROWS:,}-row bulk insert "
                  "(goal ≤ 5%)",
                  ["backend", "triggers", "without triggers (median)",
                   "with triggers (median)", "overhead", "goal", "result"])
    for r in results:
        overhead = median_ratio(r.with_, r.without) - 1
        table.add(r.backend, r.kind, fmt_time(stats(r.without).median),
                  fmt_time(stats(r.with_).median), fmt_pct(overhead), "≤ 5%",
                  verdict(overhead <= 0.05))
    table.note("PostgreSQL: `INSERT INTO t SELECT g, 'org-' || (g % 100), g % 1000, md5(g::text) "
               "FROM generate_series(1, 100000) g` + COMMIT with plain psycopg. SQLite: the same "
               "rows from a recursive CTE + COMMIT with plain sqlite3. Tables are identical "
               "apart from the triggers (installed with reactive_nb's own `install_triggers`) "
               "and emptied (untimed) before each insert.")
    table.note(f"{repeat} repetitions per variant, interleaved in rotating order; overhead = "
               "median of the per-round ratios with/without - 1.")
    table.note(f"While timing: {cpu.describe()}.")
    return table


# -- idle poller CPU -----------------------------------------------------------------------


def _thread_cpu_clock(name: str) -> int:
    """The CPU-time clock of the running thread called ``name`` (Linux)."""
    (thread,) = [t for t in threading.enumerate() if t.name == name]
    assert thread.ident is not None
    return time.pthread_getcpuclockid(thread.ident)


def idle_poller_table(seconds: float) -> Table:
    """CPU share of one core used by an idle SqlitePoller (20 ms) over ``seconds``, next to
    the polling baseline (1 s) and the same check query polled every 20 ms, watched over
    the same seconds (each thread's own CPU clock)."""
    from sqlalchemy import create_engine

    from reactive_nb.capture import sqlite as sqlite_capture

    table = Table("External 3 · CPU of an idle SQLite poller (goal < 1% of one core)",
                  ["poller", "interval", "what each poll runs", "CPU, share of one core",
                   "goal", "result"])
    cpu = CpuWatch().start()
    with sqlite_file() as (url, path):
        create_ticks(url)
        engine = create_engine(url)
        try:
            sqlite_capture.install_triggers(engine, ["ticks"])
        finally:
            engine.dispose()
        ours = sqlite_capture.SqlitePoller(path, lambda change: None)
        start_after = max_id(url)
        baselines = {interval: PollingBaseline(url, CHECK, QUERY,
                                               LatencyRecorder(0, start_after), interval)
                     for interval in (1.0, 0.02)}
        ours.start()
        try:
            clocks: dict[str | float, int] = {
                "ours": _thread_cpu_clock(sqlite_capture.THREAD_NAME)}
            for interval, baseline in baselines.items():
                baseline.start()
                ident = baseline.thread.ident  # both baselines' threads share one name
                assert ident is not None
                clocks[interval] = time.pthread_getcpuclockid(ident)
            time.sleep(1.5)  # the baselines' first poll runs the full query: not counted
            cpu0 = {key: time.clock_gettime(clock) for key, clock in clocks.items()}
            wall0 = time.monotonic()
            time.sleep(seconds)  # idle on purpose: the cost of doing nothing is measured
            share = {key: (time.clock_gettime(clock) - cpu0[key])
                     / (time.monotonic() - wall0) for key, clock in clocks.items()}
        finally:
            ours.close()
            for baseline in baselines.values():
                baseline.close()
    cpu.stop()
    table.add("reactive_nb `SqlitePoller`", "20 ms", "`PRAGMA data_version`",
              fmt_pct(share["ours"]), "< 1%", verdict(share["ours"] < IDLE_CPU_GOAL))
    for interval in baselines:
        label = ("polling baseline" if interval == 1.0
                 else "polling at the poller's interval")
        table.add(label, fmt_time(interval),
                  f"`{CHECK}` (SQLAlchemy, a pooled connection)",
                  fmt_pct(share[interval]), "—", "—")
    table.note(f"Idle: triggers installed on `ticks` (10,000 rows), no writes for {seconds:g} s "
               "after a 1.5 s warm-up. Each share is the poller thread's own CPU time "
               "(`pthread_getcpuclockid`) over the wall time, all three watched at once.")
    table.note(f"While watching: {cpu.describe()}.")
    return table


def run(settings: Settings) -> Iterator[Table]:
    writes = settings.pick(200, 40)
    spacing = 0.08
    notes = [
        "Latency = `time.time()` when the `df` observer of the live query sees the row minus "
        "the `time.time()` the external writer (a subprocess with the plain driver, "
        "autocommit) stamped into that row just before its INSERT; three untimed warm-up "
        "writes come first. Net = raw minus the paced bare query time (median of "
        "`pandas.read_sql_query` of the same query, one call per write interval, same run; the "
        "hot-loop median is shown too).",
        "Polling baseline: a thread checking `SELECT MAX(id), COUNT(*)` every 1 s and "
        "re-running the query on change, during the same writes.",
        f"Query: `{QUERY}` over 10,000 rows; one write every {spacing * 1e3:.0f} ms.",
    ]
    if settings.quick:
        notes.append("Quick mode: only 40 writes per scenario, so p99 is close to the maximum.")
    results: list[Latency] = []
    goals: dict[str, tuple[float, float]] = {}
    if pg_available():
        with pg_database() as url:
            r = external(url, "PostgreSQL", writes, spacing, _PG_WRITER, pg_conninfo(url),
                         settings)
            results.append(r)
            goals[r.scenario] = (0.010, NAN)
    else:
        notes.append("PostgreSQL is not reachable: its rows are skipped.")
    with sqlite_file() as (url, path):
        r = external(url, "SQLite", writes, spacing, _SQLITE_WRITER, path, settings)
        results.append(r)
        goals[r.scenario] = (0.030, NAN)
    yield latency_table("External 1 · commit by an external client → `live.df` updated "
                        "(goals: PostgreSQL net p50 ≤ 10 ms, SQLite net p50 ≤ 30 ms)",
                        results, goals, notes)

    overheads: list[Overhead] = []
    repeat = settings.pick(15, 3)
    cpu = CpuWatch().start()
    if pg_available():
        with pg_database() as url:
            overheads.extend(_pg_bulk(url, repeat))
    with sqlite_file() as (url, path):
        overheads.extend(_sqlite_bulk(url, path, repeat))
    cpu.stop()
    yield overhead_table(overheads, repeat, cpu)

    yield idle_poller_table(settings.pick(10, 3))
