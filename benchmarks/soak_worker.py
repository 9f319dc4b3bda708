"""One process of the soak benchmark (``bench_soak.py``): a ReactiveDB sharing the soak's
private Redis, holding ``5 functions x tenants`` live queries, that checks them against
fresh queries whenever the parent asks.

Run as ``python -m benchmarks.soak_worker URL REDIS_URL TENANTS_CSV``. The protocol is one
JSON object per line: the parent writes commands on stdin (``{"cmd": "check", "n": 3,
"settle": <time.time() of the settle>}``, ``{"cmd": "stop"}``), the worker answers on
stdout (``ready``, ``check``, ``done``). Logs go to stderr (a file the parent keeps).

At a check, with the writer paused since ``settle``:

* **lost**: a live query whose ``df`` is not equal to the same SQL run fresh on a plain
  connection by ``settle + CONVERGE`` seconds;
* **stale**: a direct (cached) call of every function for every tenant, made after that
  wait, whose frame differs from the fresh one.

Latency: an observer on each ``events`` live query records ``time.time()`` minus the ``ts``
the writer stamped into each marker row just before its commit, the first time a frame
carrying that row arrives.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

#: A live query must equal the fresh result this many seconds after a settle.
CONVERGE = 5.0
#: A live query that missed CONVERGE is watched until this many seconds after the settle,
#: to report whether it arrived late or never.
LATE = 30.0

#: The soak's functions: name -> (dependencies, SQL with :o = the tenant). Every query
#: orders its rows completely, so two runs on the same data give equal frames.
FUNCTIONS: dict[str, tuple[list[str], str]] = {
    "soak.tasks": (["task"],
                   "SELECT id, project_id, title, done FROM task "
                   "WHERE organization_id = :o ORDER BY id"),
    "soak.taskCounts": (["task"],
                        "SELECT done, COUNT(*) AS n FROM task WHERE organization_id = :o "
                        "GROUP BY done ORDER BY done"),
    "soak.projects": (["project", "task"],
                      "SELECT p.id, p.name, COUNT(t.id) AS tasks, "
                      "COALESCE(SUM(CASE WHEN t.done THEN 1 ELSE 0 END), 0) AS done "
                      "FROM project p LEFT JOIN task t ON t.project_id = p.id "
                      "WHERE p.organization_id = :o GROUP BY p.id, p.name ORDER BY p.id"),
    "soak.events": (["event"],
                    "SELECT id, kind, ts FROM event WHERE organization_id = :o "
                    "ORDER BY id DESC LIMIT 50"),
    "soak.orgCard": (["org", "project"],
                     "SELECT o.id, o.name, (SELECT COUNT(*) FROM project p "
                     "WHERE p.organization_id = o.id) AS projects FROM org o "
                     "WHERE o.id = :o"),
}


def rss() -> int:
    """Resident set size of this process in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def same(a: Any, b: Any) -> bool:
    """Whether two frames hold the same values (dtypes aside: a frame decoded from Redis and
    one read by pandas may differ in integer width)."""
    import pandas as pd

    if a is None or b is None:
        return False
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    try:
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                      check_dtype=False, check_index_type=False,
                                      check_column_type=False)
    except AssertionError:
        return False
    return True


class Markers:
    """Observer of an ``events`` live query: commit -> df latency of each marker row."""

    def __init__(self, sink: list[float], lock: threading.Lock) -> None:
        self.last = 0
        self.sink = sink
        self.lock = lock

    def __call__(self, change: Any) -> None:
        now = time.time()
        df = change["new"]
        if df is None or len(df) == 0:
            return
        ids = df["id"].to_numpy()
        stamps = df["ts"].to_numpy()
        with self.lock:
            fresh = ids > self.last
            if not fresh.any():
                return
            self.sink.extend(float(now - ts) for ts in stamps[fresh] if ts > 0)
            self.last = int(ids.max())


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    import pandas as pd
    from sqlalchemy import create_engine, text

    import reactive_nb as rnb

    url, redis_url, tenants = argv[0], argv[1], argv[2].split(",")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    db = rnb.connect(url, redis=redis_url, tenant_column="organization_id")
    plain = create_engine(url)
    functions = {}
    for name, (deps, sql) in FUNCTIONS.items():
        def handler(organization_id: str, _sql: str = sql) -> Any:
            return db.read_sql(_sql, o=organization_id)

        handler.__name__ = name.split(".")[1]
        functions[name] = db.reactive(name=name, dependencies=deps)(handler)

    latencies: list[float] = []
    latency_lock = threading.Lock()
    lives = {}
    for tenant in tenants:
        for name, fn in functions.items():
            live = fn.live(organization_id=tenant, tenant=tenant)
            if name == "soak.events":
                live.observe(Markers(latencies, latency_lock), names=["df"])
            lives[(name, tenant)] = live
    for live in lives.values():
        live.wait(120)
    emit({"type": "ready", "rss": rss(), "listening": db.listening, "lives": len(lives)})

    def fresh() -> dict[tuple[str, str], Any]:
        found = {}
        with plain.connect() as conn:
            for name, tenant in lives:
                found[(name, tenant)] = pd.read_sql(text(FUNCTIONS[name][1]), conn,
                                                    params={"o": tenant})
        return found

    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "stop":
            break
        if command["cmd"] != "check":
            continue
        started = time.time()
        settle = float(command["settle"])
        expected = fresh()
        pending = set(lives)
        while True:
            for key in list(pending):
                if same(lives[key].df, expected[key]):
                    pending.discard(key)
            if not pending or time.time() > settle + CONVERGE:
                break
            time.sleep(0.05)
        converged = time.time() - settle
        missed = {key: (lives[key].status, lives[key].error) for key in pending}
        # Not a loss yet if it arrives later: keep watching (up to LATE s) to tell a slow
        # refresh from a change that never arrives.
        late: dict[tuple[str, str], float] = {}
        while pending and time.time() < settle + LATE:
            time.sleep(0.1)
            for key in list(pending):
                if same(lives[key].df, expected[key]):
                    pending.discard(key)
                    late[key] = time.time() - settle
        lost = []
        for key, (status, error) in sorted(missed.items()):
            live = lives[key]
            df = live.df
            lost.append({"query": f"{key[0]}({key[1]})", "status_at_5s": status,
                         "error": error, "rows": None if df is None else len(df),
                         "fresh_rows": len(expected[key]),
                         "converged_after_s": round(late[key], 2) if key in late else None,
                         "status_now": live.status})
        stale = []
        for (name, tenant), want in expected.items():
            with db.tenant(tenant):
                got = functions[name](organization_id=tenant)
            if not same(got, want):
                stale.append({"query": f"{name}({tenant})", "rows": len(got),
                              "fresh_rows": len(want)})
        with latency_lock:
            batch, latencies[:] = list(latencies), []
        emit({"type": "check", "n": command["n"], "lost": lost, "stale": stale,
              "converged": converged, "took": time.time() - started, "rss": rss(),
              "latencies": batch, "listening": db.listening})
    with latency_lock:
        batch = list(latencies)
    emit({"type": "done", "rss": rss(), "latencies": batch,
          "stats": {name: {k: v for k, v in s.items() if isinstance(v, int | float)}
                    for name, s in db.stats().get("functions", {}).items()}})
    db.close()
    plain.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
