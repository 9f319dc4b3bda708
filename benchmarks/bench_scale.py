"""Issue 12 benchmark: N kernel processes with the same live queries on one Redis. How many
database queries does one write cost, with the lease (one run per change, the others
serve its entry) and without it (every kernel re-runs every affected query)?

Each kernel is a process of its own with its own ``rnb.connect`` on the same database and
Redis prefix, holding the same 3 live queries. A writer process commits single-row
INSERTs, paced so each is a lone write, stamping ``time.time()`` into the row. Both modes
run in the same kernels, one after the other (``db.leases = None`` turns the lease off).
Redis is a private ``redis-server`` started for the run, so its command counts are this
benchmark's alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .bench_live import create_ticks
from .common import (
    REDIS_URL,
    REPO_ROOT,
    CpuWatch,
    Settings,
    Table,
    fmt_ms,
    pg_available,
    pg_database,
    private_redis,
    sqlite_file,
    stats,
    verdict,
)

INSERT = "INSERT INTO ticks (ts, note) VALUES (:ts, :note)"
GOAL_QUERIES = 1.1  # database queries per write and live query, at N = 16
GOAL_FOLLOWER_MS = 2.0  # followers' p50 at most the leaders' p50 plus this
WARM_UP = 3

QUERIES = {
    "recent": "SELECT id, ts FROM ticks ORDER BY id DESC LIMIT 100",
    "summary": "SELECT MAX(id) AS id, MAX(ts) AS ts, COUNT(*) AS n FROM ticks",
    "buckets": "SELECT id % 10 AS bucket, COUNT(*) AS n, MAX(id) AS id, MAX(ts) AS ts "
               "FROM ticks GROUP BY id % 10",
}

# One kernel. Protocol on stdin/stdout, one line each way:
#   "lease on" | "lease off"  -> "ok"
#   "report FIRST LAST"       -> JSON once every live query shows id >= LAST: the handler
#                                runs whose frame's newest id is in [FIRST, LAST], and per
#                                frame shown (newest id in range): latency, ran here or not
#   end of input              -> closes and exits
# A frame "ran here" when this kernel's handler computed it; otherwise it was served from
# the shared cache (followed another kernel's run, or a plain hit).
_KERNEL = r'''
import json, sys, threading, time
import reactive_nb as rnb

url, redis_url, prefix, names, workers = sys.argv[1:6]
SQL = json.loads(sys.argv[6])
db = rnb.connect(url, redis=redis_url, key_prefix=prefix, workers=int(workers))
leases = db.leases


class Book:
    """What this kernel computed and showed; ``cond`` guards every field."""

    def __init__(self):
        self.cond = threading.Condition()
        self.ran = {}  # name -> newest id of each frame its handler computed
        self.last = {}  # name -> newest id shown
        self.shown = []  # (newest id, latency s, ran here)

    def computed(self, name, df):
        with self.cond:
            self.ran.setdefault(name, []).append(int(df["id"].max()))

    def seen(self, name, df):
        now = time.time()
        top, ts = int(df["id"].max()), float(df["ts"].max())
        with self.cond:
            if top <= self.last.get(name, -1):
                return
            self.last[name] = top
            self.shown.append((top, now - ts, top in self.ran.get(name, ())))
            self.cond.notify_all()


book = Book()


def define(name):
    sql = SQL[name]

    @db.reactive(name="scale." + name, dependencies=["ticks"])
    def handler():
        df = db.read_sql(sql)
        book.computed(name, df)
        return df

    return handler


lives = {}
for name in names.split(","):
    lives[name] = define(name).live().wait(120)
    lives[name].observe(lambda change, name=name: book.seen(name, change["new"]), names=["df"])
    book.seen(name, lives[name].df)
print("ready", flush=True)
for line in sys.stdin:
    words = line.split()
    if words[:1] == ["lease"]:
        db.leases = leases if words[1] == "on" else None
        print("ok", flush=True)
    elif words[:1] == ["report"]:
        first, last = int(words[1]), int(words[2])
        with book.cond:
            book.cond.wait_for(lambda: all(book.last.get(n, -1) >= last for n in lives), 120)
            runs = sum(first <= top <= last for ids in book.ran.values() for top in ids)
            shown = [(lat, ran) for top, lat, ran in book.shown if first <= top <= last]
            behind = {n: book.last.get(n, -1) for n in lives if book.last.get(n, -1) < last}
        print(json.dumps({"runs": runs, "shown": shown, "behind": behind}), flush=True)
db.close()
'''


# -- a private Redis -----------------------------------------------------------------------


def command_calls(url: str) -> tuple[int, dict[str, int]]:
    """Total commands the server executed (those inside scripts included), and per command."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        info: Any = client.info("commandstats")
    finally:
        client.close()
    per = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}
    return sum(per.values()), per


# -- kernels -------------------------------------------------------------------------------


class Kernels:
    """``n`` kernel processes speaking the line protocol above."""

    def __init__(self, n: int, url: str, redis_url: str, prefix: str, names: list[str],
                 workers: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                          env.get("PYTHONPATH")]))
        # stderr to files, not pipes: a chatty kernel cannot fill a pipe and block
        self.logs = [tempfile.TemporaryFile(mode="w+") for _ in range(n)]  # noqa: SIM115
        self.procs = [subprocess.Popen(
            [sys.executable, "-c", _KERNEL, url, redis_url, prefix, ",".join(names),
             str(workers), json.dumps(QUERIES)],
            cwd=str(REPO_ROOT), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=log, text=True) for log in self.logs]

    def _read(self, i: int) -> str:
        line = self.procs[i].stdout.readline()  # type: ignore[union-attr]
        if not line:
            self.logs[i].seek(0)
            raise RuntimeError(f"kernel {i} exited; stderr:\n{self.logs[i].read()[-3000:]}")
        return line.strip()

    def expect(self, word: str) -> None:
        for i in range(len(self.procs)):
            line = self._read(i)
            if line != word:
                raise RuntimeError(f"kernel {i} said {line!r}, not {word!r}")

    def send(self, line: str) -> None:
        for proc in self.procs:
            proc.stdin.write(line + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]

    def report(self, first: int, last: int) -> list[dict[str, Any]]:
        self.send(f"report {first} {last}")
        return [json.loads(self._read(i)) for i in range(len(self.procs))]

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()


# -- one scenario --------------------------------------------------------------------------


@dataclass
class Phase:
    """One mode's measurements over ``writes`` timed writes."""

    mode: str
    writes: int
    queries: int = 0  # handler runs, every kernel, timed writes only
    commands: int = 0  # Redis commands executed meanwhile
    per_command: dict[str, int] = field(default_factory=dict)
    ran: list[float] = field(default_factory=list)  # latencies of frames computed there
    served: list[float] = field(default_factory=list)  # of frames served from the cache
    problems: list[str] = field(default_factory=list)
    cpu: str = ""


@dataclass
class Scenario:
    kernels: int
    live_queries: int
    backend: str
    spacing: float
    phases: list[Phase] = field(default_factory=list)
    started_in: float = 0.0


def _max_id(db: Any) -> int:
    return int(db.read_sql("SELECT MAX(id) AS m FROM ticks")["m"].iloc[0])


def scenario(url: str, backend: str, redis_url: str, n: int, names: list[str],
             writes: int, spacing: float, workers: int) -> Scenario:
    import redis

    import reactive_nb as rnb

    prefix = f"scale{n}"
    result = Scenario(n, len(names), backend, spacing)
    started = time.perf_counter()
    kernels = Kernels(n, url, redis_url, prefix, names, workers)
    writer = rnb.connect(url, redis=redis_url, key_prefix=prefix, capture="local")
    try:
        kernels.expect("ready")
        result.started_in = time.perf_counter() - started
        for mode in ("lease", "off"):
            kernels.send(f"lease {'on' if mode == 'lease' else 'off'}")
            kernels.expect("ok")
            phase = Phase(mode, writes)
            pace = time.monotonic()
            for i in range(-WARM_UP, 0):  # untimed (ts = -1)
                writer.execute(INSERT, ts=-1.0, note=f"warm-{i}")
                pace += spacing
                time.sleep(max(0.0, pace - time.monotonic()))  # pacing, not waiting
            first = _max_id(writer) + 1
            before, per_before = command_calls(redis_url)
            cpu = CpuWatch().start()
            pace = time.monotonic()
            for i in range(writes):
                writer.execute(INSERT, ts=time.time(), note=f"{mode}-{i}")
                pace += spacing
                time.sleep(max(0.0, pace - time.monotonic()))  # pacing, not waiting
            last = _max_id(writer)
            reports = kernels.report(first, last)
            cpu.stop()
            after, per_after = command_calls(redis_url)
            phase.cpu = cpu.describe()
            phase.commands = after - before - 1  # the INFO that measured it
            phase.per_command = {k: v - per_before.get(k, 0) for k, v in per_after.items()
                                 if v - per_before.get(k, 0) > 0 and k != "info"}
            phase.queries = sum(r["runs"] for r in reports)
            for r in reports:
                phase.ran.extend(lat for lat, ran in r["shown"] if ran)
                phase.served.extend(lat for lat, ran in r["shown"] if not ran)
                if r["behind"]:
                    phase.problems.append(f"a kernel never showed the last write: {r['behind']}")
            result.phases.append(phase)
        client = redis.Redis.from_url(redis_url)
        try:  # this scenario's keys go, so the next one starts from an empty Redis
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
    finally:
        writer.close()
        kernels.close()
    return result


# -- the table -----------------------------------------------------------------------------


def _p(samples: list[float], which: str) -> str:
    if not samples:
        return "—"
    s = stats(samples)
    return fmt_ms(s.p50 if which == "p50" else s.p99)


def table(results: list[Scenario], notes: list[str]) -> Table:
    out = Table(
        "Scale · N kernels, the same live queries, one Redis: database queries per write "
        f"(goal ≤ {GOAL_QUERIES} per live query at N = 16; without the lease: N)",
        ["kernels", "live queries each", "mode", "writes", "DB queries per write and "
         "live query", "goal", "result", "commit → df, ran there: p50 / p99",
         "commit → df, served from the cache: p50 / p99", "followers - leaders (p50)",
         "Redis commands per write"])
    for r in results:
        for p in r.phases:
            per = p.queries / (p.writes * r.live_queries)
            if p.mode == "lease" and r.kernels >= 16:
                goal = f"≤ {GOAL_QUERIES}"
                ok = verdict(per <= GOAL_QUERIES and not p.problems)
            else:
                goal, ok = "—", ("MISS" if p.problems else "—")
            gap = "—"
            if p.ran and p.served:
                delta = (stats(p.served).p50 - stats(p.ran).p50) * 1e3
                gap = f"{delta:+.1f} ms"
                if p.mode == "lease" and r.kernels > 1:
                    gap += f" ({verdict(delta <= GOAL_FOLLOWER_MS)} ≤ {GOAL_FOLLOWER_MS:.0f} ms)"
            mode = "lease" if p.mode == "lease" else "no lease (baseline)"
            out.add(r.kernels, r.live_queries, mode, p.writes, f"{per:.2f}", goal, ok,
                    f"{_p(p.ran, 'p50')} / {_p(p.ran, 'p99')} (n={len(p.ran)})",
                    f"{_p(p.served, 'p50')} / {_p(p.served, 'p99')} (n={len(p.served)})",
                    gap, f"{p.commands / p.writes:.1f}")
    for r in results:
        out.note(f"N = {r.kernels} ({r.backend}, {r.live_queries} live quer"
                 f"{'y' if r.live_queries == 1 else 'ies'}, a write every "
                 f"{r.spacing * 1e3:.0f} ms): {r.kernels} kernels ready in "
                 f"{r.started_in:.1f} s.")
        for p in r.phases:
            top = sorted(p.per_command.items(), key=lambda kv: -kv[1])[:8]
            per_write = ", ".join(f"{k} {v / p.writes:.1f}" for k, v in top)
            out.note(f"N = {r.kernels}, {p.mode}: commands per write by kind: {per_write}; "
                     f"{p.cpu}.")
            for problem in p.problems:
                out.note(f"N = {r.kernels}, {p.mode}: {problem}")
    for text in notes:
        out.note(text)
    return out


def run(settings: Settings) -> Iterator[Table]:
    writes = settings.pick(100, 20)
    notes = [
        "DB queries per write and live query = handler runs in every kernel whose frame holds "
        "a timed write, divided by (writes * live queries per kernel): 1.0 means one run per "
        "write per live query for the whole fleet. Both modes run in the same kernels, lease "
        "first, then `db.leases = None` (every kernel runs its own misses, as before).",
        "Commit → df: `time.time()` when a kernel's `df` observer sees the newest row minus "
        "the writer's `time.time()` stamped into that row just before its INSERT (same "
        "machine clock). 'Ran there': the kernel's own handler computed the frame (with the "
        "lease: the leader); 'served': the frame came from the shared cache (a follower, or "
        "a kernel that heard the change after the entry was stored).",
        "Redis commands per write = INFO commandstats calls during the timed writes (commands "
        "run inside Lua scripts counted too; the idle bus readers' blocking XREADs included) "
        "/ writes, on a private redis-server.",
    ]
    if settings.quick:
        notes.append(f"Quick mode: {writes} writes per mode, so p99 is close to the maximum.")
    results: list[Scenario] = []
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(private_redis("--maxclients", "10000"))
        if redis_url is None:
            redis_url = REDIS_URL
            notes.append("redis-server is not installed: the shared Redis was used, so the "
                         "command counts include other clients' traffic.")
        if pg_available():
            url = stack.enter_context(pg_database())
            backend = "PostgreSQL"
        else:
            url, path = stack.enter_context(sqlite_file())
            _wal(path)
            backend = "SQLite (WAL)"
            notes.append("PostgreSQL is not reachable: SQLite in WAL mode instead.")
        create_ticks(url)
        # Each kernel has connect()'s default 4 worker threads, more than its live
        # queries: with fewer, a kernel's third query would wait for a worker of its own,
        # and the wait would count as following. N = 2: one leader and one follower, as
        # many kernels as cores, so the follower's own cost shows apart from CPU queueing
        # among kernels that all wake at once.
        for n, spacing in ((1, 0.15), (2, 0.15), (4, 0.2), (16, 0.5)):
            results.append(scenario(url, backend, redis_url, n, list(QUERIES), writes,
                                    spacing, workers=4))
        if not settings.quick:
            # 64 kernels: one light live query each, one worker thread, on a SQLite file in
            # WAL mode (64 PostgreSQL connections would crowd a server limited to 100).
            light, light_path = stack.enter_context(sqlite_file("light.db"))
            create_ticks(light)
            _wal(light_path)
            results.append(scenario(light, "SQLite (WAL)", redis_url, 64, ["summary"],
                                    settings.pick(40, 10), 1.0, workers=1))
    yield table(results, notes)


def _wal(path: str) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
