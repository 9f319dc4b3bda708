"""One run per (tenant, key, definition, versions) across processes: the Redis lease.

Three tiers, all against the real Redis: the lease store alone; two ReactiveDBs in this
process on one key prefix (as far as the lease goes, two kernels), with the leader's
handler held on an Event so the test says exactly when it finishes; and real kernel
processes sharing a SQLite file or a PostgreSQL database, counting handler runs per write
in Redis.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import reactive_nb as rnb
from reactive_nb.events import DEFAULT_TENANT
from reactive_nb.stores.cache import RedisCache
from reactive_nb.stores.lease import ANNOUNCED_MAX_BYTES, RedisLeases
from reactive_nb.stores.versions import RedisVersions
from tests.teamhub import create

pytestmark = pytest.mark.redis

ROOT = Path(__file__).parent.parent
VERSIONS = {"agent": 1, "@epoch": 7}


@pytest.fixture
def leases(redis_client: Any, redis_prefix: str) -> Iterator[tuple[RedisLeases, RedisLeases]]:
    """Two lease stores on one prefix: two processes, as far as Redis can tell."""
    a, b = RedisLeases(redis_client, redis_prefix), RedisLeases(redis_client, redis_prefix)
    yield a, b
    a.close()
    b.close()


def done_entries(client: Any, store: RedisLeases, key: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange(store.done_key(DEFAULT_TENANT, key))]


# -- the store ---------------------------------------------------------------------------


def test_a_lease_is_exclusive_and_its_release_leaves_a_done_marker(
        leases: tuple[RedisLeases, RedisLeases], redis_client: Any) -> None:
    a, b = leases
    mine = a.claim(DEFAULT_TENANT, "k", 0xAB, VERSIONS, expected_ms=120)
    assert mine.ours
    theirs = b.claim(DEFAULT_TENANT, "k", 0xAB, VERSIONS)
    assert not theirs.ours and not theirs.done
    assert theirs.holder == mine.value and theirs.expected_ms == 120
    assert 0 < theirs.ttl_ms <= b.lease_ms
    a.release(mine, "k", ran=True)
    late = b.claim(DEFAULT_TENANT, "k", 0xAB, VERSIONS)  # missed the cache just before
    assert late.done and not late.ours
    assert done_entries(redis_client, a, "k") == [{b"ok": b"1"}]
    assert redis_client.pttl(a.done_key(DEFAULT_TENANT, "k")) > 0  # it expires


def test_a_failed_run_deletes_its_lease(leases: tuple[RedisLeases, RedisLeases],
                                        redis_client: Any) -> None:
    a, b = leases
    mine = a.claim(DEFAULT_TENANT, "k", 1, VERSIONS)
    a.release(mine, "k", ran=False)
    assert b.claim(DEFAULT_TENANT, "k", 1, VERSIONS).ours  # taken over at once
    assert done_entries(redis_client, a, "k") == [{b"ok": b"0"}]


def test_other_versions_or_definitions_have_leases_of_their_own(
        leases: tuple[RedisLeases, RedisLeases]) -> None:
    a, b = leases
    assert a.claim(DEFAULT_TENANT, "k", 1, VERSIONS).ours
    assert b.claim(DEFAULT_TENANT, "k", 1, {**VERSIONS, "agent": 2}).ours
    assert b.claim(DEFAULT_TENANT, "k", 2, VERSIONS).ours
    assert b.claim("acme", "k", 1, VERSIONS).ours
    assert {a.lease_key("acme", "k", 1, VERSIONS).split(":")[1]} == {"{acme}"}  # its slot


def test_wait_sees_an_announcement_made_between_the_claim_and_the_wait(
        leases: tuple[RedisLeases, RedisLeases]) -> None:
    a, b = leases
    mine = a.claim(DEFAULT_TENANT, "k", 1, VERSIONS)
    theirs = b.claim(DEFAULT_TENANT, "k", 1, VERSIONS)
    a.release(mine, "k", ran=True)  # before the follower starts to wait
    assert b.wait(DEFAULT_TENANT, "k", theirs.mark, timeout=30)
    assert not b.wait(DEFAULT_TENANT, "other", theirs.mark, timeout=0.05)  # not for "other"


def test_renewal_extends_a_held_lease_and_reports_a_lost_one(
        leases: tuple[RedisLeases, RedisLeases], redis_client: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    a, _ = leases
    mine = a.claim(DEFAULT_TENANT, "k", 1, VERSIONS)
    redis_client.pexpire(mine.lease, 100)
    assert a.renew_now() == 1
    assert redis_client.pttl(mine.lease) > 100
    redis_client.set(mine.lease, b"someone else")
    with caplog.at_level(logging.WARNING):
        a.renew_now()
    assert "lost the lease" in caplog.text
    assert redis_client.get(mine.lease) == b"someone else"  # never taken back
    a.release(mine, "k", ran=True)
    assert redis_client.get(mine.lease) == b"someone else"  # the release is token-checked
    assert a.renew_now() == 0


# -- announcements that carry the entry ----------------------------------------------------


@pytest.fixture
def announcing(redis_client: Any, redis_prefix: str
               ) -> Iterator[tuple[RedisCache, RedisVersions, RedisLeases, RedisLeases]]:
    """Two lease stores with the cache and counters of their prefix (as ``connect`` makes
    them): their announcements carry copies of small entries."""
    cache = RedisCache(redis_client, prefix=redis_prefix)
    versions = RedisVersions(redis_client, prefix=redis_prefix)
    a, b = (RedisLeases(redis_client, redis_prefix, cache=cache, versions=versions)
            for _ in range(2))
    yield cache, versions, a, b
    a.close()
    b.close()


def test_an_announcement_carries_the_entry_and_the_counters_read_with_it(
        announcing: tuple[RedisCache, RedisVersions, RedisLeases, RedisLeases]) -> None:
    cache, versions, a, b = announcing
    versions.bump(DEFAULT_TENANT, ["agent"])
    now = versions.snapshot(DEFAULT_TENANT)
    scopes = (DEFAULT_TENANT,)
    mine = a.claim(DEFAULT_TENANT, "k", 1, VERSIONS, scopes=scopes)
    theirs = b.claim(DEFAULT_TENANT, "k", 1, VERSIONS, scopes=scopes)
    frame = pd.DataFrame({"n": [3]})
    cache.set(DEFAULT_TENANT, "k", frame, {"agent": now["agent"]}, None)
    a.release(mine, "k", ran=True)
    announced = b.wait(DEFAULT_TENANT, "k", theirs.mark, timeout=30)
    assert announced is not None and announced.ok
    assert announced.counters == {DEFAULT_TENANT: now}
    entry = announced.cached(time.time(), lambda v: v == {"agent": now["agent"]})
    assert entry is not None and entry.df.equals(frame)
    assert announced.cached(time.time(), lambda v: False) is None  # not valid: not served
    versions.bump(DEFAULT_TENANT, ["agent"])  # a write after the announcement
    late = b.claim(DEFAULT_TENANT, "k", 1, VERSIONS, scopes=scopes)
    assert late.done and late.announcement is not None
    # the claim read the counters again: the copy is seen stale
    assert late.announcement.counters[DEFAULT_TENANT]["agent"] == now["agent"] + 1
    assert late.announcement.entry == announced.entry


def test_an_announcement_carries_no_large_entry_and_no_failed_one(
        announcing: tuple[RedisCache, RedisVersions, RedisLeases, RedisLeases],
        redis_client: Any) -> None:
    cache, _, a, b = announcing
    large = pd.DataFrame({"x": range(ANNOUNCED_MAX_BYTES // 4)})
    assert cache.set(DEFAULT_TENANT, "big", large, {"agent": 0}, None)
    mine = a.claim(DEFAULT_TENANT, "big", 1, VERSIONS, scopes=(DEFAULT_TENANT,))
    theirs = b.claim(DEFAULT_TENANT, "big", 1, VERSIONS, scopes=(DEFAULT_TENANT,))
    a.release(mine, "big", ran=True)
    announced = b.wait(DEFAULT_TENANT, "big", theirs.mark, timeout=30)
    assert announced is not None and announced.ok and announced.entry is None
    assert cache.set(DEFAULT_TENANT, "k", pd.DataFrame({"n": [1]}), {"agent": 0}, None)
    mine = a.claim(DEFAULT_TENANT, "k", 1, VERSIONS, scopes=(DEFAULT_TENANT,))
    theirs = b.claim(DEFAULT_TENANT, "k", 1, VERSIONS, scopes=(DEFAULT_TENANT,))
    a.release(mine, "k", ran=False)  # failed: whatever the cache holds is not its result
    announced = b.wait(DEFAULT_TENANT, "k", theirs.mark, timeout=30)
    assert announced is not None and not announced.ok and announced.entry is None
    for i in range(3):  # only the newest announcement is kept: one copy per key at most
        a.release(a.claim(DEFAULT_TENANT, "k", 2, {**VERSIONS, "agent": 10 + i}), "k",
                  ran=True)
    assert len(done_entries(redis_client, a, "k")) == 1


def test_a_tenants_announcement_reads_both_its_scopes_on_one_server(
        announcing: tuple[RedisCache, RedisVersions, RedisLeases, RedisLeases]) -> None:
    cache, versions, a, b = announcing
    versions.bump(DEFAULT_TENANT, ["agent"])  # an unscoped write
    scopes = ("acme", DEFAULT_TENANT)
    mine = a.claim("acme", "k", 1, VERSIONS, scopes=scopes)
    theirs = b.claim("acme", "k", 1, VERSIONS, scopes=scopes)
    cache.set("acme", "k", pd.DataFrame({"n": [1]}), {"agent": 0}, None)
    a.release(mine, "k", ran=True)
    announced = b.wait("acme", "k", theirs.mark, timeout=30)
    assert announced is not None
    assert set(announced.counters) == set(scopes)
    assert announced.counters[DEFAULT_TENANT]["agent"] == 1


# -- two kernels in this process ---------------------------------------------------------


class Probe:
    """Called by the handler: says that the run started, then holds it until ``go``."""

    def __init__(self, fail: bool = False, hold: bool = False) -> None:
        self.fail = fail
        self.started = threading.Event()
        self.go = threading.Event()
        if not hold:
            self.go.set()

    def __call__(self) -> None:
        self.started.set()
        assert self.go.wait(30), "the test never let the run finish"
        if self.fail:
            raise RuntimeError("the query failed")


def define(db: rnb.ReactiveDB, probe: Probe) -> Any:
    """The same definition (same fingerprint) in both ReactiveDBs: ``probe`` counts by its
    type and its ``__call__``, not by its state."""

    @db.reactive(name="lease.count", dependencies=["agent"])
    def count() -> Any:
        frame = db.read_sql("SELECT COUNT(*) AS n FROM agent")
        probe()  # after the query: a write while held makes this frame stale
        return frame

    return count


@pytest.fixture
def kernels(sqlite_url: str, redis_url: str,
            redis_prefix: str) -> Iterator[tuple[rnb.ReactiveDB, rnb.ReactiveDB]]:
    create(sqlite_url)
    a = rnb.connect(sqlite_url, redis=redis_url, key_prefix=redis_prefix, workers=0)
    b = rnb.connect(sqlite_url, redis=redis_url, key_prefix=redis_prefix, workers=0)
    yield a, b
    for db in (a, b):
        db.close()


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def main() -> None:
        try:
            out["value"] = call()
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=main, name="test-lease-call")
    thread.start()
    return thread, out


def waiting_probe(db: rnb.ReactiveDB) -> threading.Event:
    """An Event set when ``db`` starts waiting for another kernel's run (a probe on the
    store's ``wait``, which still blocks on Redis as usual)."""
    assert db.leases is not None
    store = db.leases
    original = store.wait
    waiting = threading.Event()

    def wait(*args: Any, **kwargs: Any) -> Any:
        waiting.set()
        return original(*args, **kwargs)

    store.wait = wait  # type: ignore[method-assign]
    return waiting


def reads_after_waking(db: rnb.ReactiveDB) -> dict[str, int]:
    """Counts ``db``'s reads of cache entries and counters made after its lease store's
    ``wait`` returns (reset at each return)."""
    assert db.leases is not None
    store, cache, versions = db.leases, db.cache, db.versions
    reads = {"cache": 0, "counters": 0, "woken": 0}
    wait, get, counters = store.wait, cache.get, versions.get

    def woken(*args: Any, **kwargs: Any) -> Any:
        announced = wait(*args, **kwargs)
        reads.update(cache=0, counters=0, woken=reads["woken"] + 1)
        return announced

    def get_entry(*args: Any, **kwargs: Any) -> Any:
        reads["cache"] += 1
        return get(*args, **kwargs)

    def get_counters(*args: Any, **kwargs: Any) -> Any:
        reads["counters"] += 1
        return counters(*args, **kwargs)

    store.wait = woken  # type: ignore[method-assign]
    cache.get = get_entry  # type: ignore[method-assign]
    versions.get = get_counters  # type: ignore[method-assign]
    return reads


def test_a_follower_serves_the_leaders_entry_without_running(
        kernels: tuple[rnb.ReactiveDB, rnb.ReactiveDB]) -> None:
    a, b = kernels
    leader_probe, follower_probe = Probe(hold=True), Probe()
    leader, follower = define(a, leader_probe), define(b, follower_probe)
    assert leader.fingerprint == follower.fingerprint
    reads = reads_after_waking(b)
    waiting = waiting_probe(b)
    led, led_out = in_thread(leader)
    assert leader_probe.started.wait(30)
    followed, followed_out = in_thread(follower)
    assert waiting.wait(30)
    leader_probe.go.set()
    led.join(30)
    followed.join(30)
    assert followed_out["value"].equals(led_out["value"])
    assert not follower_probe.started.is_set()  # the follower ran nothing
    assert (leader.stats.led, follower.stats.followed, follower.stats.runs) == (1, 1, 0)
    assert b.stats()["functions"]["lease.count"]["followed"] == 1
    # the announcement carried the entry and its counters: served as it woke
    assert reads == {"cache": 0, "counters": 0, "woken": 1}


def test_a_stale_shared_entry_costs_one_read_of_the_counters_before_the_claim(
        kernels: tuple[rnb.ReactiveDB, rnb.ReactiveDB]) -> None:
    """The counters read for the hit check are the ones the claim is made for: a stale
    entry found in a shared cache costs one read of the counters, not one to see it stale
    and another to claim."""
    a, _ = kernels
    count = define(a, Probe())
    count()
    a.execute("INSERT INTO agent (id, organization_id, name) VALUES (60, 'acme', 'x')")
    reads = {"snapshot": 0, "get": 0}
    for name in reads:
        original = getattr(a.versions, name)

        def counted(*args: Any, name: str = name, original: Any = original) -> Any:
            reads[name] += 1
            return original(*args)

        setattr(a.versions, name, counted)
    assert int(count()["n"].iloc[0]) == 4  # stale: run again (led)
    assert reads == {"snapshot": 1, "get": 0}
    assert int(count()["n"].iloc[0]) == 4  # a hit: the same single read
    assert reads == {"snapshot": 2, "get": 0}
    assert count.stats.led == 2 and count.stats.hits == 1


def test_a_failed_leader_run_writes_no_entry_and_a_follower_takes_over(
        kernels: tuple[rnb.ReactiveDB, rnb.ReactiveDB]) -> None:
    a, b = kernels
    leader_probe, follower_probe = Probe(fail=True, hold=True), Probe(hold=True)
    leader, follower = define(a, leader_probe), define(b, follower_probe)
    waiting = waiting_probe(b)
    led, led_out = in_thread(leader)
    assert leader_probe.started.wait(30)
    followed, followed_out = in_thread(follower)
    assert waiting.wait(30)
    leader_probe.go.set()  # the leader's run fails
    led.join(30)
    assert isinstance(led_out.get("error"), RuntimeError)
    assert follower_probe.started.wait(30)  # woken at once, the follower runs it itself
    assert b.cache.get(DEFAULT_TENANT, follower.cache_key()) is None  # nothing was written
    follower_probe.go.set()
    followed.join(30)
    assert int(followed_out["value"]["n"].iloc[0]) == 3
    assert (leader.stats.errors, follower.stats.led, follower.stats.followed) == (1, 1, 0)
    assert b.cache.get(DEFAULT_TENANT, follower.cache_key()) is not None


def test_a_follower_never_serves_an_entry_older_than_a_write_it_waited_through(
        kernels: tuple[rnb.ReactiveDB, rnb.ReactiveDB]) -> None:
    a, b = kernels
    leader_probe, follower_probe = Probe(hold=True), Probe()
    leader, follower = define(a, leader_probe), define(b, follower_probe)
    waiting = waiting_probe(b)
    led, led_out = in_thread(leader)
    assert leader_probe.started.wait(30)  # its frame (3 agents) is read: versions before
    followed, followed_out = in_thread(follower)
    assert waiting.wait(30)
    a.execute("INSERT INTO agent (id, organization_id, name) VALUES (50, 'acme', 'new')")
    leader_probe.go.set()  # stores 3 agents under the versions before the write
    led.join(30)
    followed.join(30)
    assert int(led_out["value"]["n"].iloc[0]) == 3
    assert int(followed_out["value"]["n"].iloc[0]) == 4  # not the leader's stale 3
    assert (follower.stats.followed, follower.stats.led) == (0, 1)


def test_a_follower_waits_at_most_a_lease_time_plus_one_run_then_runs_itself(
        kernels: tuple[rnb.ReactiveDB, rnb.ReactiveDB]) -> None:
    a, b = kernels
    assert a.leases is not None and b.leases is not None
    a.leases.lease_ms = b.leases.lease_ms = 1_000  # the leader renews every 333 ms
    leader_probe, follower_probe = Probe(hold=True), Probe()
    leader, follower = define(a, leader_probe), define(b, follower_probe)
    led, led_out = in_thread(leader)
    assert leader_probe.started.wait(30)  # alive, renewing, and stuck (a wedged query)
    assert int(follower()["n"].iloc[0]) == 3  # after ~1 s: its own run, not the leader's
    assert (follower.stats.ran_anyway, follower.stats.followed) == (1, 0)
    leader_probe.go.set()
    led.join(30)
    assert leader.stats.led == 1 and "value" in led_out


def test_force_and_an_unshared_cache_take_no_lease(kernels: tuple[rnb.ReactiveDB,
                                                                  rnb.ReactiveDB],
                                                   sqlite_url: str) -> None:
    a, _ = kernels
    count = define(a, Probe())
    count.fetch(DEFAULT_TENANT, {}, force=True)
    assert count.stats.led == 0 and count.stats.runs == 1
    with rnb.connect(sqlite_url) as local:
        assert local.leases is None


def test_callers_in_three_kernels_never_miss_a_write_committed_before_their_call(
        pg_url: str, redis_url: str, redis_prefix: str) -> None:
    """Three kernels call one function in rounds, all at once after a commit (so they
    contend for one lease: one leads, the others follow, or claim late), while a writer
    commits one more row during each round: every result counts at least the rows
    committed before its call began. Two things keep it so, each enough here: a lease is
    per versions (a follower never waits for a run of older ones), and a copy is served
    only if fresh by the counters read with it. Seen failing with both undone."""
    create(pg_url)
    kernels = [rnb.connect(pg_url, redis=redis_url, key_prefix=redis_prefix, workers=0)
               for _ in range(4)]
    writer, callers = kernels[-1], kernels[:-1]
    rounds = 60
    committed = [int(writer.read_sql("SELECT COUNT(*) AS n FROM agent")["n"].iloc[0])]
    racing = threading.Semaphore(0)
    ids, counted = itertools.count(1000), threading.Lock()
    behind: list[tuple[int, int]] = []

    def insert() -> None:
        writer.execute("INSERT INTO agent (id, organization_id, name) VALUES (:i, 'acme', 'w')",
                       i=next(ids))
        with counted:
            committed[0] += 1  # after its commit returned

    def between_rounds() -> None:  # the barrier's action: every caller is waiting
        insert()
        racing.release()  # and one more row, committed while the round's calls run

    together = threading.Barrier(len(callers), action=between_rounds, timeout=60)

    def race() -> None:
        for _ in range(rounds):
            if not racing.acquire(timeout=60):
                return
            insert()

    def call(db: rnb.ReactiveDB) -> None:
        count = define(db, Probe())
        for _ in range(rounds):
            together.wait()
            before = committed[0]
            shown = int(count()["n"].iloc[0])
            if shown < before:
                behind.append((before, shown))

    threads = [threading.Thread(target=call, args=(db,), name=f"test-caller-{i}")
               for i, db in enumerate(callers)]
    threads.append(threading.Thread(target=race, name="test-writer"))
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
        assert behind == []
        stats = [db.stats()["functions"]["lease.count"] for db in callers]
        assert sum(s["followed"] for s in stats) > 0, stats  # the follower path ran
    finally:
        for db in kernels:
            db.close()

# -- kernel processes --------------------------------------------------------------------

# A kernel: one live query, reporting every frame it shows on a Redis stream, until its
# stdin closes; then its function's stats as JSON. The handler counts its runs in Redis.
# Once the test sets ``armed``, the first run to start blocks for good (a slow query, in
# which the test kills its process).
KERNEL = """
import json, os, sys, threading
import redis
import reactive_nb as rnb

url, redis_url, prefix, lease_ms = sys.argv[1:5]
r = redis.Redis.from_url(redis_url)
runs, armed, victims, report = (f"{prefix}:test:{name}"
                                for name in ("runs", "armed", "victims", "report"))
db = rnb.connect(url, redis=redis_url, key_prefix=prefix)
db.leases.lease_ms = int(lease_ms)

@db.reactive(name="lease.count", dependencies=["agent"])
def count():
    r.incr(runs)
    if r.get(armed) and r.set(armed + ":taken", 1, nx=True):
        r.rpush(victims, os.getpid())
        threading.Event().wait(120)
    return db.read_sql("SELECT COUNT(*) AS n FROM agent")

def seen(df):
    r.xadd(report, {"pid": os.getpid(), "n": int(df["n"].iloc[0])})

live = count.live().wait(60)
live.observe(lambda change: seen(change["new"]), names=["df"])
seen(live.df)
sys.stdin.read()
print(json.dumps(count.stats.as_dict()))
db.close()
"""


class Kernels:
    """``n`` kernel processes; what each one shows, as they report it."""

    def __init__(self, n: int, url: str, redis_url: str, prefix: str, lease_ms: int) -> None:
        import redis

        self.prefix = prefix
        self.client = redis.Redis.from_url(redis_url, protocol=2)
        self.procs = {}
        for _ in range(n):
            proc = subprocess.Popen(
                [sys.executable, "-c", KERNEL, url, redis_url, prefix, str(lease_ms)],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            self.procs[proc.pid] = proc
        self.shown: dict[int, int] = {}  # pid -> rows in the frame it shows
        self._last = b"0-0"

    def key(self, name: str) -> str:
        return f"{self.prefix}:test:{name}"

    @property
    def runs(self) -> int:
        return int(self.client.get(self.key("runs")) or 0)

    def until(self, done: Callable[[], bool], what: str, timeout: float = 60) -> None:
        """Read reports (blocking on the stream) until ``done()``."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            dead = [p for p in self.procs.values() if p.poll() is not None]
            if left <= 0 or dead:
                errors = "\n".join(p.communicate()[1][-3000:] for p in dead)
                raise AssertionError(f"{what}: kernels show {self.shown}\n{errors}")
            reply = self.client.xread({self.key("report"): self._last},
                                      block=int(min(left, 1.0) * 1000) + 1)
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    self._last = entry_id
                    self.shown[int(fields[b"pid"])] = int(fields[b"n"])

    def ready(self) -> None:
        self.until(lambda: set(self.shown) == set(self.procs), "not all kernels started")

    def converge(self, rows: int) -> None:
        self.until(lambda: all(self.shown.get(pid) == rows for pid in self.procs),
                   f"not every kernel shows {rows} rows")

    def kill(self, pid: int) -> None:
        proc = self.procs.pop(pid)
        os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=30)

    def stop(self) -> list[dict[str, Any]]:
        stats = []
        for proc in self.procs.values():
            out, err = proc.communicate(input="", timeout=60)
            assert proc.returncode == 0, err
            stats.append(json.loads(out.strip().splitlines()[-1]))
        self.procs.clear()
        return stats

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.communicate()
        self.client.close()


@pytest.fixture
def spawn(redis_url: str, redis_prefix: str) -> Iterator[Callable[..., Kernels]]:
    started: list[Kernels] = []

    def start(url: str, n: int, lease_ms: int = 5_000) -> Kernels:
        started.append(Kernels(n, url, redis_url, redis_prefix, lease_ms))
        return started[-1]

    yield start
    for group in started:
        group.close()


def insert(db: rnb.ReactiveDB, i: int) -> None:
    db.execute("INSERT INTO agent (id, organization_id, name) VALUES (:id, 'acme', :name)",
               id=100 + i, name=f"w{i}")


@pytest.mark.slow
def test_one_run_per_write_across_four_kernels(db_url: str, redis_url: str,
                                               redis_prefix: str,
                                               spawn: Callable[..., Kernels]) -> None:
    create(db_url)
    kernels = spawn(db_url, 4)
    kernels.ready()
    start = kernels.runs
    writes = 5
    with rnb.connect(db_url, redis=redis_url, key_prefix=redis_prefix) as writer:
        for i in range(writes):
            insert(writer, i)
            kernels.converge(3 + i + 1)  # every kernel shows this write
    # Each write is seen by all four before the next, so no write races another: exactly
    # one handler run per write, whichever kernel heard it first.
    assert kernels.runs - start == writes
    stats = kernels.stop()
    assert sum(s["led"] for s in stats) == kernels.runs  # every run held the lease
    assert sum(s["ran_anyway"] for s in stats) == 0
    assert sum(s["followed"] for s in stats) >= 1


@pytest.mark.slow
def test_a_killed_leader_is_taken_over_after_its_lease_lapses(
        sqlite_url: str, redis_url: str, redis_prefix: str,
        spawn: Callable[..., Kernels]) -> None:
    create(sqlite_url)
    lease_ms = 3_000  # first renewal after 1 s: the kill comes long before
    kernels = spawn(sqlite_url, 4, lease_ms)
    kernels.ready()
    start = kernels.runs
    kernels.client.set(kernels.key("armed"), 1)
    with rnb.connect(sqlite_url, redis=redis_url, key_prefix=redis_prefix) as writer:
        insert(writer, 0)
    popped = kernels.client.blpop([kernels.key("victims")], timeout=30)
    assert popped is not None, "no kernel started the slow run"
    kernels.kill(int(popped[1]))  # the leader dies in its handler, holding the lease
    kernels.converge(4)  # the three others: one took over once the lease lapsed
    assert kernels.runs - start == 2  # the dead leader's run and the takeover
    stats = kernels.stop()
    assert sum(s["ran_anyway"] for s in stats) == 0
