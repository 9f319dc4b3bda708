"""What every benchmark shares: timing statistics, Markdown tables with goals, and
throwaway resources (a fresh PostgreSQL database, a Redis key prefix, a SQLite file)
that are removed afterwards, so a run never touches anything it did not create.

The machine is small and often shared, so two timings that are compared are taken
back to back, in alternating order (``interleave``), and a ratio is the median of the
per-pair ratios: a burst of load from elsewhere then hits both sides of a pair alike.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """How hard to work: ``quick`` trades precision for a run of well under a minute."""

    quick: bool = False

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full


# -- statistics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Summary of timings in seconds."""

    n: int
    median: float
    p99: float
    mean: float
    minimum: float

    @property
    def p50(self) -> float:
        return self.median


def stats(samples: Sequence[float]) -> Stats:
    """Median, p99 (linear interpolation), mean and minimum of ``samples``."""
    import numpy as np

    if not samples:
        raise ValueError("no samples")
    values = np.asarray(samples, dtype=float)
    return Stats(len(values), float(np.median(values)), float(np.percentile(values, 99)),
                 float(values.mean()), float(values.min()))


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of the per-pair ratios ``numerators[i] / denominators[i]``."""
    import statistics

    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


def time_call(fn: Callable[[], object]) -> float:
    """Seconds taken by one call; the result is kept alive until the clock has stopped,
    and released afterwards, outside the timed region."""
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    del result
    return elapsed


def time_calls(fn: Callable[[], object], repeat: int, *, warmup: int = 3,
               before: Callable[[], object] | None = None) -> list[float]:
    """Time ``repeat`` calls after ``warmup`` untimed ones; ``before`` runs untimed before each."""
    for _ in range(warmup):
        if before is not None:
            before()
        fn()
    samples = []
    for _ in range(repeat):
        if before is not None:
            before()
        samples.append(time_call(fn))
    return samples


@dataclass(frozen=True)
class Contender:
    """One side of an interleaved comparison: what is timed, and untimed set-up before it."""

    fn: Callable[[], object]
    before: Callable[[], object] | None = None


def interleave(contenders: Mapping[str, Contender], repeat: int, *,
               warmup: int = 2) -> dict[str, list[float]]:
    """Time every contender once per round, rotating the order each round.

    Each contender's last result stays alive until its next call, like a notebook
    variable (``df = ...``) holding the previous result while the next one is built:
    that keeps a contender that caches from paying for memory the others give back.
    """
    names = list(contenders)
    held: dict[str, object] = {}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + repeat):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            contender = contenders[name]
            if contender.before is not None:
                contender.before()
            start = time.perf_counter()
            held[name] = contender.fn()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                samples[name].append(elapsed)
    held.clear()
    return samples


# -- formatting ----------------------------------------------------------------------------


def fmt_time(seconds: float) -> str:
    """A duration with a unit that keeps 3 significant digits."""
    if seconds != seconds:  # NaN
        return "n/a"
    magnitude = abs(seconds)
    if magnitude < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if magnitude < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def fmt_ms(seconds: float) -> str:
    """A duration in milliseconds with one decimal (latency tables)."""
    return f"{seconds * 1e3:.1f} ms"


def fmt_ratio(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}x"
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.3f}x"


def fmt_pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


@dataclass
class Table:
    """A titled Markdown table with notes printed under it."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([str(c) for c in cells])

    def note(self, text: str) -> None:
        self.notes.append(text)

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines.extend("| " + " | ".join(row) + " |" for row in self.rows)
        if self.notes:
            lines.append("")
            lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines) + "\n"


# -- services and throwaway resources ------------------------------------------------------


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def pg_available() -> bool:
    return reachable(PG_HOST, PG_PORT)


def redis_available() -> bool:
    return reachable(REDIS_HOST, REDIS_PORT)


def pg_admin(sql: str) -> None:
    """Run ``sql`` as the postgres superuser in the ``postgres`` database (autocommit)."""
    import psycopg

    with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database ``rnb_bench_<hex>`` (SQLAlchemy URL), dropped afterwards."""
    name = f"rnb_bench_{uuid.uuid4().hex[:12]}"
    pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_conninfo(url: str) -> str:
    """A libpq connection string for a SQLAlchemy ``postgresql+psycopg://`` URL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return (f"host={parsed.host} port={parsed.port or 5432} user={parsed.username} "
            f"dbname={parsed.database}")


@contextlib.contextmanager
def redis_prefix() -> Iterator[str]:
    """A key prefix ``rnbbench-<hex>``; every key under it is deleted afterwards (SCAN)."""
    import redis

    prefix = f"rnbbench-{uuid.uuid4().hex[:10]}"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            batch: list[Any] = []
            for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    client.delete(*batch)
                    batch = []
            if batch:
                client.delete(*batch)
        finally:
            client.close()


@contextlib.contextmanager
def sqlite_file(name: str = "bench.db") -> Iterator[tuple[str, str]]:
    """A SQLite file in a temporary folder: yields (SQLAlchemy URL, path); removed after."""
    folder = tempfile.mkdtemp(prefix="rnb_bench_")
    path = os.path.join(folder, name)
    try:
        yield f"sqlite:///{path}", path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- processes and threads -----------------------------------------------------------------


def spawn_python(script: str, *args: str) -> subprocess.Popen[str]:
    """Run ``script`` in a fresh interpreter (``sys.executable -c``) with ``args`` in sys.argv."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=str(REPO_ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float) -> str:
    """Wait for a child; raise with its stderr when it failed or hung; return its stdout."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"child process hung; stderr:\n{err[-2000:]}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"child process exited {proc.returncode}; stderr:\n{err[-2000:]}")
    return out


class LatencyRecorder:
    """Observer of a frame holding rows ``(id, ts)``: for every id not seen before, records
    ``time.time() - ts`` at the moment the frame is seen, i.e. commit-to-visible latency
    when the writer stamped ``ts = time.time()`` just before its INSERT. Rows with
    ``ts <= 0`` (preloaded, warm-up) are skipped.

    ``done`` is set once ``expected`` new rows were seen. Thread-safe: ``seen`` may be
    called from any thread (a scheduler worker, a poller).
    """

    def __init__(self, expected: int, start_after: int) -> None:
        self.expected = expected
        self.latencies: list[float] = []
        self.done = threading.Event()
        self._last_id = start_after
        self._lock = threading.Lock()  # guards _last_id and latencies (no I/O under it)

    def seen(self, df: Any) -> None:
        now = time.time()
        if df is None or len(df) == 0:
            return
        ids = df["id"].to_numpy()
        stamps = df["ts"].to_numpy()
        with self._lock:
            fresh = ids > self._last_id
            if not fresh.any():
                return
            # ts <= 0 marks untimed rows (preloaded data, warm-up writes).
            self.latencies.extend(float(now - ts) for ts in stamps[fresh] if ts > 0)
            self._last_id = int(ids.max())
            count = len(self.latencies)
        if count >= self.expected:
            self.done.set()

    def on_trait(self, change: Mapping[str, Any]) -> None:
        """A traitlets observer for ``live.observe(recorder.on_trait, names=["df"])``."""
        self.seen(change["new"])


class PollingBaseline:
    """The ``reactive.poll`` pattern, faithfully: a thread that every ``interval`` seconds
    runs a cheap check (``SELECT MAX(id), COUNT(*)``) and, when its value changed, re-runs
    the full query and hands the frame to ``recorder``. Its own plain SQLAlchemy engine.
    """

    def __init__(self, url: str, check_sql: str, query_sql: str, recorder: LatencyRecorder,
                 interval: float = 1.0) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(url)
        self.check_sql = check_sql
        self.query_sql = query_sql
        self.recorder = recorder
        self.interval = interval
        self.errors: list[str] = []
        self._stop = threading.Event()
        #: The polling thread (bench_external reads its CPU clock through its ident).
        self.thread = threading.Thread(target=self._run, name="reactive_nb-bench-poller",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)
        self.engine.dispose()

    def _run(self) -> None:
        import pandas as pd
        from sqlalchemy import text

        last: object = None
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                with self.engine.connect() as conn:
                    value = tuple(conn.execute(text(self.check_sql)).one())
                    if value != last:
                        last = value
                        self.recorder.seen(pd.read_sql_query(text(self.query_sql), conn))
                next_tick += self.interval
                self._stop.wait(max(0.0, next_tick - time.monotonic()))
        except Exception as exc:  # logged and reported in the table, never silent
            logger.exception("the polling baseline failed")
            self.errors.append(f"{type(exc).__name__}: {exc}")


class GcPauses:
    """Counts full (generation 2) garbage collections and the longest pause of any
    generation while the block runs: they explain outliers in latency tails."""

    def __init__(self) -> None:
        self.full = 0
        self.longest = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.longest = max(self.longest, time.perf_counter() - self._started)
        if info.get("generation") == 2:
            self.full += 1

    def start(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def __enter__(self) -> GcPauses:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> str:
        return (f"{self.full} full garbage collection(s), longest GC pause "
                f"{self.longest * 1e3:.1f} ms")


class CpuWatch:
    """How busy the whole machine was during a block (Linux ``/proc/stat``), next to this
    process's own CPU time: on a small shared machine, other processes' load explains
    latency tails that the code under test does not."""

    def __init__(self) -> None:
        self._start: tuple[float, float] | None = None
        self._own = 0.0
        self._wall = 0.0
        self.machine_busy: float | None = None  # fraction of all CPUs, 0..1
        self.own_busy = 0.0  # this process, fraction of all CPUs

    @staticmethod
    def _proc_stat() -> tuple[float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields = [float(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    def start(self) -> CpuWatch:
        self._start = self._proc_stat()
        self._own = time.process_time()
        self._wall = time.perf_counter()
        return self

    def stop(self) -> None:
        wall = time.perf_counter() - self._wall
        cpus = os.cpu_count() or 1
        self.own_busy = (time.process_time() - self._own) / (wall * cpus) if wall else 0.0
        end = self._proc_stat()
        if self._start is not None and end is not None and end[1] > self._start[1]:
            self.machine_busy = (end[0] - self._start[0]) / (end[1] - self._start[1])

    def describe(self) -> str:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        machine = ("n/a" if self.machine_busy is None
                   else f"{self.machine_busy * 100:.0f}%")
        return (f"machine CPU busy {machine} of {os.cpu_count()} CPUs (this process "
                f"{self.own_busy * 100:.0f}%), 1-min load average {load:.2f}")


# -- machine -------------------------------------------------------------------------------


def machine_info() -> str:
    """One line: CPUs, Python, pandas, SQLAlchemy, PostgreSQL and Redis versions."""
    import pandas
    import sqlalchemy

    parts = [f"CPUs: {os.cpu_count()}", f"Python {platform.python_version()}",
             f"pandas {pandas.__version__}", f"SQLAlchemy {sqlalchemy.__version__}"]
    try:
        import psycopg

        with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres",
                             connect_timeout=2) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        parts.append(f"PostgreSQL {row[0] if row else '?'}")
    except Exception as exc:
        parts.append(f"PostgreSQL unavailable ({type(exc).__name__})")
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            parts.append(f"Redis {client.info('server')['redis_version']}")
        finally:
            client.close()
    except Exception as exc:
        parts.append(f"Redis unavailable ({type(exc).__name__})")
    parts.append(f"{platform.system()} {platform.machine()}")
    if hasattr(os, "getloadavg"):
        parts.append(f"load average at start {os.getloadavg()[0]:.2f}")
    return " · ".join(parts)


class RedisServer:
    """A redis-server of a benchmark's own on a free port, in a temporary folder: started,
    killed (SIGKILL), paused (SIGSTOP) and restarted for real."""

    def __init__(self, *options: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.dir = tempfile.mkdtemp(prefix="rnb_bench_redis_")
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=1)

    def start(self) -> None:
        """Start and return once it answers PING (polled: a starting server sends no
        event)."""
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, *self.options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        pause = threading.Event()
        while True:
            client = self.client()
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                pause.wait(0.02)
            finally:
                client.close()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def restart(self, down: float) -> None:
        """SIGKILL, ``down`` seconds with no server, start again (data lost)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        threading.Event().wait(down)  # the outage itself, not a synchronisation
        self.start()
        self.restarts += 1

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a paused server cannot exit
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def private_redis(*options: str) -> Iterator[str | None]:
    """A ``RedisServer`` of this run's own (its URL), or None when the binary is missing
    (then the caller uses the shared Redis, and others' traffic counts too)."""
    if shutil.which("redis-server") is None:
        yield None
        return
    server = RedisServer(*options)
    try:
        server.start()
        yield server.url
    finally:
        server.close()
