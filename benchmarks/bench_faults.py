"""Issue 10 benchmark: faults and resource bounds.

* **Hung Redis**: a private ``redis-server`` stopped with SIGSTOP (connections accepted by
  the kernel, never answered). Call and ``execute`` latency with Redis hung next to the
  same with Redis healthy and to the bare query, all in one run; the commands Redis ran
  while stopped; the time the breaker takes to close after SIGCONT.
* **Memory bound**: the resident memory a full in-process cache adds, against
  ``cache_bytes``, for one-row, empty and 100,000-row frames (each shape in a fresh
  interpreter, so the figure is that cache's alone).
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from .common import (
    Contender,
    CpuWatch,
    RedisServer,
    Settings,
    Table,
    finish,
    fmt_ms,
    interleave,
    spawn_python,
    sqlite_file,
    stats,
    time_calls,
    verdict,
)

#: The goal: with Redis hung, a call costs at most its query time plus this (p99), and a
#: write is delayed by at most this.
SLACK = 0.100
#: Memory goal: resident growth of a full cache / cache_bytes.
RSS_GOAL = 1.5
BOUND_MIB = 64
NOT_DATA_PATH = {"info", "config", "client", "hello", "ping", "command", "select"}


# -- a private redis-server ------------------------------------------------------------------


class _Server(RedisServer):
    """The benchmark's own redis-server, with the command counts it reports."""

    def commands(self) -> int:
        """Commands run since CONFIG RESETSTAT, except this benchmark's and the bus's."""
        client = self.client()
        try:
            found: dict[str, Any] = client.info("commandstats")
        finally:
            client.close()
        total = 0
        for name, stat in found.items():
            command = name.removeprefix("cmdstat_").split("|")[0]
            if command not in NOT_DATA_PATH and not command.startswith("x"):
                total += int(stat["calls"])
        return total

    def reset_stats(self) -> None:
        client = self.client()
        try:
            client.config_resetstat()
        finally:
            client.close()


# -- hung Redis ------------------------------------------------------------------------------


def _load(path: str, rows: int = 1_000) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, bucket INTEGER, name TEXT)")
        conn.executemany("INSERT INTO item VALUES (?, ?, ?)",
                         [(i, i % 10, f"item {i}") for i in range(rows)])
        conn.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT)")
    conn.close()


class _Counter(logging.Handler):
    """Counts the records each reactive_nb logger emits at WARNING or above (and keeps
    them off stderr, where they would interleave with the tables)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.name] = self.counts.get(record.name, 0) + 1


class _Timed:
    """Wraps a callable and records how long each call took (the bus's publish)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.samples: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.samples.append(time.perf_counter() - start)


def _hung_redis(settings: Settings) -> Table:
    import reactive_nb as rnb

    table = Table("Faults 1 · Redis hung (SIGSTOP): call and write latency "
                  f"(goal: ≤ baseline p99 + {SLACK * 1e3:.0f} ms)",
                  ["operation", "Redis", "n", "p50", "p99", "goal (p99)", "verdict"])
    if shutil.which("redis-server") is None:
        table.note("redis-server is not on PATH: skipped.")
        return table
    calls = settings.pick(400, 100)
    writes = settings.pick(40, 12)
    server = _Server()
    server.start()
    cpu = CpuWatch().start()
    logged = _Counter()
    logging.getLogger("reactive_nb").addHandler(logged)
    try:
        with sqlite_file() as (url, path):
            _load(path)
            db = rnb.connect(url, redis=server.url, capture="local", workers=0)
            try:
                sql = "SELECT id, name FROM item WHERE bucket = :b ORDER BY id"

                @db.reactive(name="items.byBucket", dependencies=["item"])
                def items(bucket: int) -> Any:
                    return db.read_sql(sql, b=bucket)

                def bare() -> Any:
                    return db.read_sql(sql, b=3)

                counter = iter(range(10**9))

                def write() -> Any:
                    return db.execute("INSERT INTO note (body) VALUES (:b)",
                                      b=f"n{next(counter)}")

                publish = _Timed(db.bus.publish)
                db.bus.publish = publish  # type: ignore[method-assign]

                # Healthy: a cache hit, the bare query, a write (bump + publish).
                items(bucket=3)
                healthy = interleave({"hit": Contender(lambda: items(bucket=3)),
                                      "bare": Contender(bare)}, calls)
                healthy_write = time_calls(write, writes)
                publish.samples.clear()

                server.reset_stats()
                server.signal(signal.SIGSTOP)
                try:
                    first = time_calls(lambda: items(bucket=3), 1, warmup=0)[0]
                    skipped = db.health.breaker.skipped
                    hung = interleave({"call": Contender(lambda: items(bucket=3)),
                                       "bare": Contender(bare)}, calls)
                    hung_write = time_calls(write, writes, warmup=0)
                    skips = db.health.breaker.skipped - skipped
                    hung_publish = list(publish.samples)
                finally:
                    server.signal(signal.SIGCONT)
                    resumed = time.perf_counter()
                deadline = resumed + 30
                while db.health.down and time.perf_counter() < deadline:
                    time.sleep(0.005)  # waiting for the breaker's probe, not timing a call
                recovered = time.perf_counter() - resumed
                sent = server.commands()
                fresh = len(items(bucket=3)) == 100
            finally:
                db.close()
    finally:
        logging.getLogger("reactive_nb").removeHandler(logged)
        cpu.stop()
        server.close()

    bare_p99 = max(stats(healthy["bare"]).p99, stats(hung["bare"]).p99)
    healthy_write_p99 = stats(healthy_write).p99
    rows: list[tuple[str, str, list[float], float | None]] = [
        ("call (cache hit)", "healthy", healthy["hit"], None),
        ("bare query (plain read_sql): the baseline of calls", "healthy", healthy["bare"],
         None),
        ("bare query (plain read_sql)", "hung", hung["bare"], None),
        ("call (served uncached)", "hung", hung["call"], bare_p99 + SLACK),
        ("execute (bump + publish): the baseline of writes", "healthy", healthy_write, None),
        ("execute", "hung", hung_write, healthy_write_p99 + SLACK),
        ("  of which bus.publish (RedisBus, its own pool)", "hung", hung_publish, None),
    ]
    for name, state, samples, goal in rows:
        if not samples:
            continue
        s = stats(samples)
        table.add(name, state, s.n, fmt_ms(s.p50), fmt_ms(s.p99),
                  "—" if goal is None else f"≤ {fmt_ms(goal)}",
                  "—" if goal is None else verdict(s.p99 <= goal))
    blocked = sum(1 for t in hung_publish if t > SLACK)
    table.note(f"The first call after the stop waited {fmt_ms(first)} (one socket timeout, "
               "then the breaker opened); it is not in the rows above.")
    table.note(f"While Redis was stopped the breaker refused {skips} store calls; Redis ran "
               f"{sent} cache/versions commands from this process in all (the call that "
               f"timed out, the breaker's probes, the replay), for {calls} calls and "
               f"{writes} writes.")
    table.note(f"After SIGCONT the breaker closed in {fmt_ms(recovered)} (its back-off); "
               f"the next call returned the fresh result: {fresh}.")
    table.note(f"bus.publish blocked for more than {SLACK * 1e3:.0f} ms on {blocked} of "
               f"{len(hung_publish)} writes: RedisBus publishes synchronously on its own "
               "connection pool, whose read timeout is its blocking-read time + 2 s "
               "(2.5 s), and retries after a back-off of its own; the breaker does not "
               "cover it.")
    warned = ", ".join(f"{name}: {n}" for name, n in sorted(logged.counts.items()))
    table.note(f"Warnings logged for this outage: {warned or 'none'}.")
    table.note(f"{cpu.describe()}.")
    return table


# -- memory bound ------------------------------------------------------------------------------

_FILL = r"""
import gc, json, sys
import numpy as np
from reactive_nb._frames import pandas
from reactive_nb.stores.cache import MemoryCache
from reactive_nb.stores.cache.memory import frame_nbytes

pd = pandas()
shape, entries, bound = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def make(i):
    if shape == "1-row":
        return pd.DataFrame.from_records([(i, f"name {i}", i * 1.5)],
                                         columns=["id", "name", "x"])
    if shape == "empty":
        return pd.DataFrame({"id": pd.Series([], dtype="int64"),
                             "name": pd.Series([], dtype=object),
                             "x": pd.Series([], dtype=float)})
    n = 100_000
    return pd.DataFrame({"id": np.arange(n) + i, "x": np.random.default_rng(i).random(n),
                         "name": [f"row {k} of {i}" for k in range(n)]})


versions = {"item": 3, "@epoch": 123456789012, "~item": 1, "@definition": 987654321}
warm = [make(i) for i in range(3)]
cache = MemoryCache(max_bytes=bound)
cache.set("acme", "warm", warm[0], versions, None)
cache.clear()
del warm
gc.collect()
before = rss()
for i in range(entries):
    cache.set("acme", 'items.byKey:{"key":%d}' % i, make(i), versions, None)
gc.collect()
grown = rss() - before
kept = (cache.get("acme", 'items.byKey:{"key":%d}' % i) for i in range(entries))
data = sum(frame_nbytes(entry.df) for entry in kept if entry is not None)  # lazy copies
print(json.dumps({"grown": grown, "kept": len(cache), "counted": cache.nbytes,
                  "data": data}))
"""


def _memory_bound(settings: Settings) -> Table:
    bound = BOUND_MIB * 2**20
    table = Table(f"Faults 2 · memory cache: resident growth against cache_bytes = "
                  f"{BOUND_MIB} MiB (goal: ≤ {RSS_GOAL}x)",
                  ["frames", "entries set", "entries kept", "counted", "data only",
                   "RSS growth", "RSS / bound", "verdict"])
    shapes = [("1-row", settings.pick(100_000, 30_000)),
              ("empty", settings.pick(100_000, 30_000)),
              ("100k-row", settings.pick(40, 24))]
    for shape, entries in shapes:
        out = finish(spawn_python(_FILL, shape, str(entries), str(bound)), timeout=600)
        found = json.loads(out.strip().splitlines()[-1])
        ratio = found["grown"] / bound
        table.add(shape, f"{entries:,}", f"{found['kept']:,}",
                  f"{found['counted'] / 2**20:.1f} MiB", f"{found['data'] / 2**20:.1f} MiB",
                  f"{found['grown'] / 2**20:.1f} MiB", f"{ratio:.2f}x",
                  verdict(ratio <= RSS_GOAL))
    table.note("Each shape fills a fresh interpreter's MemoryCache well past its bound "
               "(distinct keys, the frames built and dropped as handler results are). "
               "counted: what the entries count against cache_bytes (data plus the "
               "measured overhead of keeping a frame); data only: what was counted before "
               "(deep memory usage), which let 100k one-row frames take 671 MiB.")
    return table


def run(settings: Settings) -> Iterator[Table]:
    yield _hung_redis(settings)
    yield _memory_bound(settings)
