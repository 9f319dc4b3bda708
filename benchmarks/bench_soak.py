"""Issue 10 soak benchmark: the reliability figure. Many kernels, many live queries, a
mixed writer through every write path, and faults on a schedule; a checker at settle
points says whether anything was lost or served stale.

* A fresh PostgreSQL database with a small multi-tenant schema (``org``, ``project``,
  ``task`` with ``ON DELETE CASCADE`` to ``project``, ``event``) and reactive_nb's
  triggers (``tenant_column="organization_id"``; ``org`` has no tenant column: its
  triggers report unscoped changes).
* A private ``redis-server`` on a free port (``--save '' --appendonly no``): every kill
  loses every key, as a crashed cache server does.
* ``WORKERS`` processes (``python -m benchmarks.soak_worker``), each a ReactiveDB with
  ``redis=`` that server, holding 5 functions x 10 tenants = 50 live queries.
* The writer (this process) at ~``RATE`` commits/s, as a random tenant each time, through
  every path: ``db.execute`` as the tenant (writable CTEs), ``db.execute`` unscoped, an
  ORM session, external psycopg transactions touching several tables (triggers), and a
  ``DELETE`` of a project cascading to its tasks (in-process and external). Most commits
  carry a marker row ``event(ts = time.time())`` stamped just before the COMMIT.
* Faults: Redis SIGKILLed and restarted every ``REDIS_EVERY`` s, the PostgreSQL listener
  terminated every ``LISTENER_EVERY`` s (both scaled down for short runs, so one minute
  still sees each).
* Settle points every ``SETTLE_EVERY`` s: the writer pauses, and every worker compares
  each live query's ``df`` with the same SQL run fresh (``lost``: not equal within 5 s of
  the settle), then calls every function directly (the cached path) and compares again
  (``stale``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .common import (
    REPO_ROOT,
    CpuWatch,
    RedisServer,
    Settings,
    Table,
    fmt_ms,
    pg_available,
    pg_conninfo,
    pg_database,
    stats,
    verdict,
)

#: Set by ``python -m benchmarks --minutes N``; None: 10 minutes (1 with ``--quick``).
MINUTES: float | None = None
WORKERS = 8
TENANTS = 10
RATE = 100.0  # commits per second
REDIS_EVERY = 60.0
LISTENER_EVERY = 45.0
SETTLE_EVERY = 12.0
REDIS_DOWN = 1.0  # seconds between the kill and the restart
RSS_GOAL = 0.10
LISTENER_SQL = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'reactive_nb-listener' "
                "AND datname = current_database()")


def configure(minutes: float | None) -> None:
    """``--minutes`` of ``python -m benchmarks``."""
    global MINUTES
    MINUTES = minutes


def tenant_name(i: int) -> str:
    return f"t{i:02d}"


# -- the database ----------------------------------------------------------------------------

SCHEMA = [
    "CREATE TABLE org (id TEXT PRIMARY KEY, name TEXT NOT NULL)",
    "CREATE TABLE project (id SERIAL PRIMARY KEY, "
    "organization_id TEXT NOT NULL REFERENCES org (id), name TEXT NOT NULL)",
    "CREATE TABLE task (id SERIAL PRIMARY KEY, "
    "organization_id TEXT NOT NULL REFERENCES org (id), "
    "project_id INTEGER NOT NULL REFERENCES project (id) ON DELETE CASCADE, "
    "title TEXT NOT NULL, done BOOLEAN NOT NULL DEFAULT false)",
    "CREATE TABLE event (id BIGSERIAL PRIMARY KEY, "
    "organization_id TEXT NOT NULL REFERENCES org (id), kind TEXT NOT NULL, "
    "ts DOUBLE PRECISION NOT NULL DEFAULT 0)",
    "CREATE INDEX ON project (organization_id, id)",
    "CREATE INDEX ON task (organization_id, id)",
    "CREATE INDEX ON task (project_id)",
    "CREATE INDEX ON event (organization_id, id)",
]


def create_schema(url: str, tenants: list[str]) -> None:
    import psycopg

    with psycopg.connect(pg_conninfo(url)) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
        for t in tenants:
            conn.execute("INSERT INTO org VALUES (%s, %s)", (t, f"Org {t}"))
            for p in range(3):
                project = conn.execute(
                    "INSERT INTO project (organization_id, name) VALUES (%s, %s) RETURNING id",
                    (t, f"project {p}")).fetchone()
                assert project is not None
                for k in range(4):
                    conn.execute("INSERT INTO task (organization_id, project_id, title, done) "
                                 "VALUES (%s, %s, %s, %s)",
                                 (t, project[0], f"task {p}.{k}", k % 2 == 0))
            for _ in range(20):
                conn.execute("INSERT INTO event (organization_id, kind) VALUES (%s, 'seed')",
                             (t,))


def install_triggers(url: str) -> list[str]:
    """Triggers on every table: ``org`` (no tenant column) unscoped, the rest per tenant."""
    import reactive_nb as rnb

    with rnb.connect(url, capture="local", workers=0) as plain:
        installed = plain.install_triggers(["org"])
    with rnb.connect(url, capture="local", workers=0,
                     tenant_column="organization_id") as scoped:
        installed += scoped.install_triggers(["project", "task", "event"])
    return installed


# -- the writer ------------------------------------------------------------------------------

_TRIM_TASKS = ("d AS (DELETE FROM task WHERE id IN (SELECT id FROM task "
               "WHERE organization_id = :o ORDER BY id DESC OFFSET 39))")
_MARK = "m AS (INSERT INTO event (organization_id, kind, ts) VALUES (:o, :k, :ts))"


class Writer:
    """Commits as a random tenant through a random path; counts commits per path."""

    PATHS = (("execute as tenant: insert task", 20), ("execute as tenant: toggle task", 10),
             ("execute unscoped: rename org", 8), ("ORM session", 20),
             ("external psycopg: 3 tables", 25), ("cascade DELETE: execute", 8),
             ("cascade DELETE: external", 9))

    def __init__(self, url: str, redis_url: str, tenants: list[str], seed: int = 10) -> None:
        import psycopg
        from sqlalchemy import Boolean, Column, Float, Integer, String
        from sqlalchemy.orm import registry

        import reactive_nb as rnb

        self.db = rnb.connect(url, redis=redis_url, capture="local", workers=0,
                              tenant_column="organization_id")
        self.external = psycopg.connect(pg_conninfo(url))
        self.tenants = tenants
        self.random = random.Random(seed)
        self.done: Counter[str] = Counter()
        self.markers = 0
        self.errors: list[str] = []
        self._names, self._weights = zip(*self.PATHS, strict=True)

        mapper = registry()

        @mapper.mapped
        class Task:
            __tablename__ = "task"
            id = Column(Integer, primary_key=True)
            organization_id = Column(String)
            project_id = Column(Integer)
            title = Column(String)
            done = Column(Boolean)

        @mapper.mapped
        class Event:
            __tablename__ = "event"
            id = Column(Integer, primary_key=True)
            organization_id = Column(String)
            kind = Column(String)
            ts = Column(Float)

        self.Task: Any = Task
        self.Event: Any = Event

    def close(self) -> None:
        self.external.close()
        self.db.close()

    def write(self) -> None:
        path = self.random.choices(self._names, self._weights)[0]
        tenant = self.random.choice(self.tenants)
        n = sum(self.done.values())
        try:
            self._write(path, tenant, n)
        except Exception as exc:  # reported in the table, never silent
            if len(self.errors) < 20:
                self.errors.append(f"{path}: {type(exc).__name__}: {exc}"[:300])
            with contextlib.suppress(Exception):
                self.external.rollback()
            self.done["(failed)"] += 1
            return
        self.done[path] += 1
        self.markers += 1

    def _write(self, path: str, o: str, n: int) -> None:
        db = self.db
        if path == "execute as tenant: insert task":
            with db.tenant(o):
                db.execute(f"WITH {_TRIM_TASKS}, {_MARK} "
                           "INSERT INTO task (organization_id, project_id, title, done) "
                           "SELECT :o, MAX(id), :title, false FROM project "
                           "WHERE organization_id = :o",
                           o=o, k="execute", title=f"task {n}", ts=time.time())
        elif path == "execute as tenant: toggle task":
            with db.tenant(o):
                db.execute(f"WITH {_MARK} UPDATE task SET done = NOT done WHERE id = "
                           "(SELECT id FROM task WHERE organization_id = :o "
                           "ORDER BY id DESC OFFSET :skip LIMIT 1)",
                           o=o, k="toggle", skip=n % 7, ts=time.time())
        elif path == "execute unscoped: rename org":
            db.execute(f"WITH {_MARK} UPDATE org SET name = :name WHERE id = :o",
                       o=o, k="unscoped", name=f"Org {o} #{n}", ts=time.time())
        elif path == "ORM session":
            from sqlalchemy import text

            with db.tenant(o), db.session() as session:
                project = session.execute(text("SELECT MAX(id) FROM project "
                                               "WHERE organization_id = :o"), {"o": o}).scalar()
                session.add(self.Task(organization_id=o, project_id=project,
                                      title=f"orm {n}", done=False))
                session.flush()
                session.execute(text("DELETE FROM task WHERE id IN (SELECT id FROM task "
                                     "WHERE organization_id = :o ORDER BY id DESC "
                                     "OFFSET 40)"), {"o": o})
                session.add(self.Event(organization_id=o, kind="orm", ts=time.time()))
                session.commit()
        elif path == "external psycopg: 3 tables":
            conn = self.external
            conn.execute("INSERT INTO task (organization_id, project_id, title) "
                         "SELECT %s, MAX(id), %s FROM project WHERE organization_id = %s",
                         (o, f"ext {n}", o))
            conn.execute("DELETE FROM task WHERE id IN (SELECT id FROM task "
                         "WHERE organization_id = %s ORDER BY id DESC OFFSET 40)", (o,))
            conn.execute("UPDATE project SET name = %s WHERE id = "
                         "(SELECT MIN(id) FROM project WHERE organization_id = %s)",
                         (f"project {n}", o))
            conn.execute("INSERT INTO event (organization_id, kind, ts) "
                         "VALUES (%s, 'external', %s)", (o, time.time()))
            conn.commit()
        elif path == "cascade DELETE: execute":
            with db.tenant(o):
                db.execute("WITH n AS (INSERT INTO project (organization_id, name) "
                           f"VALUES (:o, :name)), {_MARK} "
                           "DELETE FROM project WHERE id = (SELECT MIN(id) FROM project "
                           "WHERE organization_id = :o)",
                           o=o, k="cascade", name=f"project {n}", ts=time.time())
        elif path == "cascade DELETE: external":
            conn = self.external
            conn.execute("INSERT INTO project (organization_id, name) VALUES (%s, %s)",
                         (o, f"project {n}"))
            conn.execute("DELETE FROM project WHERE id = (SELECT MIN(id) FROM project "
                         "WHERE organization_id = %s)", (o,))
            conn.execute("INSERT INTO event (organization_id, kind, ts) "
                         "VALUES (%s, 'cascade-ext', %s)", (o, time.time()))
            conn.commit()
        else:  # pragma: no cover
            raise ValueError(path)


# -- the workers -----------------------------------------------------------------------------


class Workers:
    """The worker processes; their stdout lines arrive on one queue as (index, message)."""

    def __init__(self, count: int, url: str, redis_url: str, tenants: list[str]) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                          env.get("PYTHONPATH")]))
        self.logs = tempfile.mkdtemp(prefix="rnb_soak_logs_")
        self.messages: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
        self.procs: list[subprocess.Popen[str]] = []
        self._errs = []
        self._readers = []
        for i in range(count):
            err = open(os.path.join(self.logs, f"worker{i}.log"), "w")  # noqa: SIM115
            self._errs.append(err)
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.soak_worker", url, redis_url,
                 ",".join(tenants)], cwd=str(REPO_ROOT), env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, text=True)
            self.procs.append(proc)
            reader = threading.Thread(target=self._read, args=(i, proc), daemon=True,
                                      name=f"soak-reader-{i}")
            reader.start()
            self._readers.append(reader)

    def _read(self, index: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                self.messages.put((index, json.loads(line)))
        self.messages.put((index, None))  # the process closed its stdout

    def log_tail(self, index: int, chars: int = 3000) -> str:
        with open(os.path.join(self.logs, f"worker{index}.log")) as f:
            return f.read()[-chars:]

    def warnings(self) -> Counter[str]:
        """WARNING/ERROR lines the workers logged, by logger name."""
        found: Counter[str] = Counter()
        for i in range(len(self.procs)):
            with open(os.path.join(self.logs, f"worker{i}.log")) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 4 and parts[3] in ("WARNING", "ERROR", "CRITICAL"):
                        found[f"{parts[2]} {parts[3]}"] += 1
        return found

    def send(self, command: dict[str, Any]) -> None:
        for proc in self.procs:
            if proc.poll() is None and proc.stdin is not None:
                proc.stdin.write(json.dumps(command) + "\n")
                proc.stdin.flush()

    def collect(self, kind: str, timeout: float) -> list[dict[str, Any]]:
        """One ``kind`` message from every worker, in worker order."""
        got: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(self.procs):
            left = deadline - time.monotonic()
            try:
                index, message = self.messages.get(timeout=max(0.01, left))
            except queue.Empty:
                missing = [i for i in range(len(self.procs)) if i not in got]
                raise RuntimeError(f"workers {missing} sent no {kind!r} in {timeout:.0f} s; "
                                   f"log of worker {missing[0]}:\n"
                                   f"{self.log_tail(missing[0])}") from None
            if message is None:
                raise RuntimeError(f"worker {index} exited ({self.procs[index].poll()}) "
                                   f"before {kind!r}; its log:\n{self.log_tail(index)}")
            if message.get("type") == kind:
                got[index] = message
        return [got[i] for i in range(len(self.procs))]

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        for reader in self._readers:
            reader.join(5)
        for err in self._errs:
            err.close()
        shutil.rmtree(self.logs, ignore_errors=True)


# -- faults ----------------------------------------------------------------------------------


class Faults:
    """A thread killing Redis and terminating the listeners on their schedules."""

    def __init__(self, server: RedisServer, url: str, redis_every: float,
                 listener_every: float) -> None:
        self.server = server
        self.url = url
        self.redis_every = redis_every
        self.listener_every = listener_every
        self.terminations = 0  # pg_terminate_backend rounds
        self.terminated = 0  # listener backends terminated in all
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-faults", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)

    def _run(self) -> None:
        import psycopg

        started = time.monotonic()
        next_redis, next_listener = self.redis_every, self.listener_every
        while not self._stop.is_set():
            due = min(next_redis, next_listener)
            if self._stop.wait(max(0.0, started + due - time.monotonic())):
                return
            try:
                if next_listener <= next_redis:
                    next_listener += self.listener_every
                    with psycopg.connect(pg_conninfo(self.url), autocommit=True) as conn:
                        rows = conn.execute(LISTENER_SQL).fetchall()
                    self.terminations += 1
                    self.terminated += sum(1 for (ok,) in rows if ok)
                else:
                    next_redis += self.redis_every
                    self.server.restart(REDIS_DOWN)
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Result:
    minutes: float
    workers: int
    lives: int = 0
    commits: Counter[str] = field(default_factory=Counter)
    markers: int = 0
    writing: float = 0.0  # seconds the writer was writing (settles excluded)
    checks: int = 0
    lost: list[str] = field(default_factory=list)
    never: int = 0  # lost ones still not equal to fresh LATE s after the settle
    stale: list[str] = field(default_factory=list)
    converged: list[float] = field(default_factory=list)  # seconds after each settle
    latencies: list[float] = field(default_factory=list)
    rss_start: list[int] = field(default_factory=list)
    rss_end: list[int] = field(default_factory=list)
    redis_restarts: int = 0
    terminations: int = 0
    terminated: int = 0
    listening: list[bool] = field(default_factory=list)
    writer_errors: list[str] = field(default_factory=list)
    fault_errors: list[str] = field(default_factory=list)
    warnings: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    cpu: str = ""

    @property
    def written(self) -> int:
        return sum(n for path, n in self.commits.items() if path != "(failed)")


def soak(minutes: float, workers: int = WORKERS, tenants: int = TENANTS,
         rate: float = RATE) -> Result:
    """Run the soak for ``minutes`` (settles included) and return what was measured."""
    total = minutes * 60.0
    redis_every = min(REDIS_EVERY, total / 2)
    listener_every = min(LISTENER_EVERY, total / 3)
    settle_every = min(SETTLE_EVERY, max(8.0, total / 5))
    names = [tenant_name(i) for i in range(tenants)]
    result = Result(minutes, workers)
    server = RedisServer()
    server.start()
    cpu = CpuWatch()
    try:
        with pg_database() as url:
            create_schema(url, names)
            install_triggers(url)
            writer = Writer(url, server.url, names)
            pool = Workers(workers, url, server.url, names)
            faults = Faults(server, url, redis_every, listener_every)
            try:
                ready = pool.collect("ready", timeout=300)
                result.lives = sum(m["lives"] for m in ready)
                result.listening = [m["listening"] for m in ready]
                start_rss: list[int] | None = None
                cpu.start()
                started = time.monotonic()
                faults.start()
                end = started + total
                while True:
                    settle_at = min(end, time.monotonic() + settle_every)
                    interval = 1.0 / rate
                    tick = time.monotonic()
                    writing = time.monotonic()
                    while time.monotonic() < settle_at:
                        writer.write()
                        tick += interval
                        delay = tick - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        elif delay < -1.0:  # behind by a second: do not burst to catch up
                            tick = time.monotonic()
                    result.writing += time.monotonic() - writing
                    result.checks += 1
                    pool.send({"cmd": "check", "n": result.checks, "settle": time.time()})
                    answers = pool.collect("check", timeout=300)
                    for i, answer in enumerate(answers):
                        result.lost += [f"check {answer['n']}, worker {i}: {json.dumps(x)}"
                                        for x in answer["lost"]]
                        result.never += sum(1 for x in answer["lost"]
                                            if x["converged_after_s"] is None)
                        result.stale += [f"check {answer['n']}, worker {i}: {json.dumps(x)}"
                                         for x in answer["stale"]]
                        result.latencies += answer["latencies"]
                        result.converged.append(answer["converged"])
                    rss_now = [a["rss"] for a in answers]
                    if start_rss is None:
                        start_rss = rss_now  # after the first writes: caches are warm
                    result.rss_end = rss_now
                    if time.monotonic() >= end:
                        break
                result.rss_start = start_rss or []
                result.elapsed = time.monotonic() - started
                faults.stop()
                cpu.stop()
                pool.send({"cmd": "stop"})
                done = pool.collect("done", timeout=120)
                for message in done:
                    result.latencies += message["latencies"]
            finally:
                faults.stop()
                pool.close()
                result.warnings = pool.warnings() if os.path.isdir(pool.logs) else Counter()
                writer.close()
            result.commits = writer.done
            result.markers = writer.markers
            result.writer_errors = writer.errors
            result.redis_restarts = server.restarts
            result.terminations = faults.terminations
            result.terminated = faults.terminated
            result.fault_errors = faults.errors
            result.cpu = cpu.describe()
    finally:
        server.close()
    return result


def tables(result: Result, rate: float = RATE) -> Iterator[Table]:
    table = Table(f"Soak · {result.workers} processes x {result.lives // max(result.workers, 1)} "
                  f"live queries, {TENANTS} tenants, writer at {rate:.0f} commits/s, "
                  f"Redis killed and listeners terminated on a schedule, "
                  f"{result.minutes:g} min (goal: 0 lost, 0 stale, RSS flat)",
                  ["measure", "value", "goal", "verdict"])
    achieved = result.written / result.writing if result.writing else 0.0
    table.add("changes written (commits)",
              f"{result.written:,} ({achieved:.0f}/s while writing)",
              f"~{rate:.0f}/s", "—")
    table.add("settle checks (every live query + every cached call, each process)",
              f"{result.checks}", "—", "—")
    table.add("changes lost (live query ≠ fresh 5 s after a settle)", f"{len(result.lost)}",
              "0", verdict(not result.lost))
    if result.lost:
        table.add("  of which never arrived (≠ fresh 30 s after the settle)",
                  f"{result.never}", "0", verdict(not result.never))
    table.add("stale reads (cached call ≠ fresh after a settle)", f"{len(result.stale)}", "0",
              verdict(not result.stale))
    if result.latencies:
        s = stats(result.latencies)
        table.add(f"commit → df, marker rows seen by the workers (n = {s.n:,})",
                  f"p50 {fmt_ms(s.p50)}, p99 {fmt_ms(s.p99)}", "—", "—")
    if result.converged:
        table.add("settle → every live query equal to fresh (slowest process)",
                  f"p50 {fmt_ms(stats(result.converged).p50)}, "
                  f"max {fmt_ms(max(result.converged))}", "≤ 5000 ms", "—")
    growths = [(e - s) / s for s, e in zip(result.rss_start, result.rss_end, strict=True)]
    if growths:
        table.add("RSS per process, first → last settle (MiB)",
                  ", ".join(f"{s / 2**20:.0f}→{e / 2**20:.0f}"
                            for s, e in zip(result.rss_start, result.rss_end, strict=True)),
                  "—", "—")
        table.add("RSS growth per process (largest)",
                  f"{max(growths) * 100:+.1f}% (mean {sum(growths) / len(growths) * 100:+.1f}%)",
                  f"≤ {RSS_GOAL * 100:.0f}% over 10 min", verdict(max(growths) <= RSS_GOAL))
    table.add("Redis SIGKILLed and restarted (all keys lost)", f"{result.redis_restarts}", "—",
              "—")
    table.add("listener terminations (pg_terminate_backend rounds / backends)",
              f"{result.terminations} / {result.terminated}", "—", "—")
    paths = ", ".join(f"{path} {n:,}" for path, n in sorted(result.commits.items()))
    table.note(f"Commits by path: {paths}. {result.markers:,} of them carried a marker row "
               "(`event.ts = time.time()` just before COMMIT); latency = `time.time()` when a "
               "worker's `events` live query first shows the row minus that stamp, over "
               "every worker (commit → df across processes, one clock).")
    table.note(f"Each settle: the writer pauses; each process runs the 50 queries fresh on "
               "a plain engine, waits up to 5 s from the settle for every live `df` to equal "
               "them (else: lost), then calls each function directly, as its tenant (else: "
               f"stale). Writing {result.writing:.0f} s of {result.elapsed:.0f} s. RSS: "
               "VmRSS at the first settle (caches warm) and at the last.")
    table.note(f"Listeners connected at start: {sum(result.listening)} of "
               f"{len(result.listening)} processes. {result.cpu}.")
    if result.warnings:
        table.note("Worker log lines at WARNING or above: " + ", ".join(
            f"{name}: {n}" for name, n in result.warnings.most_common(8)) + ".")
    for title, items in (("lost", result.lost), ("stale", result.stale),
                         ("writer errors", result.writer_errors),
                         ("fault injection errors", result.fault_errors)):
        if items:
            table.note(f"{title} ({len(items)}; first 5): " + "; ".join(items[:5]))
    yield table


def run(settings: Settings) -> Iterator[Table]:
    minutes = MINUTES if MINUTES is not None else (1.0 if settings.quick else 10.0)
    if shutil.which("redis-server") is None or not pg_available():
        table = Table("Soak", ["measure", "value"])
        table.note("needs PostgreSQL on 127.0.0.1:5432 and `redis-server` on PATH: skipped.")
        yield table
        return
    yield from tables(soak(minutes))
