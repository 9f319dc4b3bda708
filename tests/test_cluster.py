"""ReactiveDB on a real local Redis Cluster (tests/cluster.py): the URL form, live queries
shared by two ReactiveDBs, and the cluster's own events -- a slot migration with live
queries on the slot (ASK while it moves, MOVED after) and a master failover (the replica
is promoted; its run_id is another epoch, so entries recorded before are stale). Then the
bus's readers (one blocking reader per master, however many tenants) and the stores' short
retry of multi-key scripts refused while their slot is half migrated (TRYAGAIN)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

import reactive_nb as rnb
from reactive_nb.events import DEFAULT_TENANT, Change
from reactive_nb.stores.bus import RedisBus
from reactive_nb.stores.bus.client import cluster_url
from reactive_nb.stores.bus.entries import stream_key
from reactive_nb.stores.health import redis_errors
from reactive_nb.stores.lease import RedisLeases
from reactive_nb.stores.slots import SLOT_ATTEMPTS, SlotRetry
from reactive_nb.stores.versions import EPOCH, RedisVersions
from tests.cluster import Cluster, cluster_prefix, redis_cluster  # noqa: F401
from tests.redis_server import eventually
from tests.teamhub import create, wait_for
from tests.teamhub import define_agents as define

pytestmark = pytest.mark.redis

WAIT = 20.0


def test_cluster_url_form() -> None:
    assert cluster_url("redis://h:7000/0?cluster=true") == ("redis://h:7000", True)
    assert cluster_url("rediss://u:p@h:7000?cluster=yes&ssl_cert_reqs=none") == (
        "rediss://u:p@h:7000?ssl_cert_reqs=none", True)
    assert cluster_url("redis://h:6379/2?cluster=false") == ("redis://h:6379/2", False)
    assert cluster_url("redis://h:6379/2") == ("redis://h:6379/2", False)
    with pytest.raises(ValueError, match="database 0 only"):
        cluster_url("redis://h:7000/3?cluster=true")


@pytest.fixture
def two_dbs(sqlite_url: str, redis_cluster: Cluster,  # noqa: F811
            cluster_prefix: str) -> Iterator[tuple[Any, Any]]:  # noqa: F811
    """Two ReactiveDBs on one SQLite file and the cluster: A by URL, B by client."""
    create(sqlite_url)
    client = redis_cluster.client()
    a = rnb.connect(sqlite_url, redis=redis_cluster.url, key_prefix=cluster_prefix)
    b = rnb.connect(sqlite_url, redis=client, key_prefix=cluster_prefix)
    # Two processes in one: a bus drops entries of its own origin (the process's), so
    # each gets its own, and hears the other's changes through the cluster.
    a.bus.origin, b.bus.origin = "test-a", "test-b"
    try:
        yield a, b
    finally:
        b.close()
        a.close()
        client.close()


def insert(db: Any, row_id: int, name: str) -> None:
    db.execute(f"INSERT INTO agent (id, organization_id, name) VALUES ({row_id}, 'acme', "
               f"'{name}')")


def converge(live: Any, db: Any, name: str) -> None:
    """The live query shows ``name``, and so does every read of the function on ``db``
    (cached or not): no stale read."""
    wait_for(live, lambda df: name in set(df["name"]), WAIT)
    assert name in set(define(db)(organization_id="acme")["name"])


def test_live_queries_refresh_across_two_dbs_on_the_cluster(two_dbs: tuple[Any, Any]) -> None:
    a, b = two_dbs
    assert a.bus.cluster and b.bus.cluster
    assert a.leases is not None and b.leases is not None
    live_a = define(a).live(organization_id="acme").wait(WAIT)
    live_b = define(b).live(organization_id="acme").wait(WAIT)
    insert(a, 10, "from_a")
    converge(live_b, b, "from_a")
    converge(live_a, a, "from_a")
    insert(b, 11, "from_b")
    converge(live_a, a, "from_b")


def reader_on(bus: Any, port: int) -> bool:
    """Whether ``bus`` has a reader for the master on ``port`` (followed streams there)."""
    return any(s.node.endswith(f":{port}") and s.tenants for s in bus.reader_stats())


def test_live_queries_survive_a_slot_migration(two_dbs: tuple[Any, Any],
                                               redis_cluster: Cluster,  # noqa: F811
                                               cluster_prefix: str) -> None:  # noqa: F811
    """Move the tenant's slot to another master by hand, with live queries on it: its keys
    first (ASK while the slot is migrating), then the slot itself (MOVED)."""
    a, b = two_dbs
    live_b = define(b).live(organization_id="acme").wait(WAIT)
    define(a).live(organization_id="acme").wait(WAIT)
    admin = redis_cluster.client()
    try:
        slot = admin.keyslot(f"{cluster_prefix}:{{{DEFAULT_TENANT}}}:versions")
    finally:
        admin.close()
    source = redis_cluster.master_of(slot)
    target = next(p for p in redis_cluster.masters() if p != source)
    eventually(lambda: reader_on(b.bus, source), WAIT, "B's bus to read from the source")
    with redis_cluster.migrating(slot, target):
        # Every key moved, as one batch of `redis-cli --cluster reshard` does, but the slot
        # still the source's: each command is answered ASK, then ASKING on the target.
        keys = redis_cluster.keys_in_slot(source, slot)
        assert keys, "the tenant has keys in its slot"
        redis_cluster.migrate(source, target, keys)
        insert(a, 20, "while_moving")
        converge(live_b, b, "while_moving")
        redis_cluster.end_migration(slot, target)
    insert(a, 21, "after_move")  # the clients' slot maps are stale: MOVED
    converge(live_b, b, "after_move")
    insert(b, 22, "from_b_after_move")
    converge(live_b, b, "from_b_after_move")
    # The bus reads the stream from its new master now, and was never reported down.
    eventually(lambda: reader_on(b.bus, target), WAIT, "B's bus to read from the target")
    assert not (a.bus.down or b.bus.down)
    redis_cluster.wait_ok()


def test_live_queries_survive_a_master_failover(two_dbs: tuple[Any, Any],
                                                redis_cluster: Cluster,  # noqa: F811
                                                cluster_prefix: str) -> None:  # noqa: F811
    """SIGKILL the master of the tenant's slot; its replica is promoted after the node
    timeout. Writes made meanwhile reach the live queries, and the epoch moved, so no entry
    recorded on the dead master can be served as fresh."""
    a, b = two_dbs
    live_b = define(b).live(organization_id="acme").wait(WAIT)
    define(a).live(organization_id="acme").wait(WAIT)
    before = b.versions.get(DEFAULT_TENANT, [EPOCH])[EPOCH]
    admin = redis_cluster.client()
    try:
        slot = admin.keyslot(f"{cluster_prefix}:{{{DEFAULT_TENANT}}}:versions")
    finally:
        admin.close()
    dead = redis_cluster.master_of(slot)
    redis_cluster.kill(dead)
    insert(a, 30, "during_failover")  # Redis down for this slot: bumps owed, replayed
    eventually(lambda: redis_cluster.master_of(slot) != dead, WAIT, "replica promoted")
    redis_cluster.wait_ok()
    converge(live_b, b, "during_failover")

    def epoch_moved() -> bool:
        try:
            return bool(b.versions.get(DEFAULT_TENANT, [EPOCH])[EPOCH] != before)
        except Exception:
            return False

    eventually(epoch_moved, WAIT, "the epoch of the promoted node")
    insert(b, 31, "after_failover")
    converge(live_b, b, "after_failover")
    # The bus reads the stream from the promoted master, and its outage is over.
    promoted = redis_cluster.master_of(slot)
    eventually(lambda: reader_on(b.bus, promoted) and not reader_on(b.bus, dead), WAIT,
               "B's bus to read from the promoted replica")
    eventually(lambda: not (a.bus.down or b.bus.down), WAIT, "the buses to be back")


# --- the bus's readers ----------------------------------------------------------------------

class Inbox:
    """A subscriber that queues the changes it is given."""

    def __init__(self) -> None:
        self.changes: queue.Queue[Change] = queue.Queue()

    def __call__(self, change: Change) -> None:
        self.changes.put(change)

    def until(self, ids: set[str]) -> list[Change]:
        """Changes received until every one of ``ids`` was (WAIT at most for each)."""
        got: list[Change] = []
        while not ids <= {c.id for c in got}:
            got.append(self.changes.get(timeout=WAIT))
        return got


@pytest.fixture
def new_bus(redis_cluster: Cluster,  # noqa: F811
            cluster_prefix: str) -> Iterator[Callable[..., RedisBus]]:  # noqa: F811
    """Make a bus on the cluster with a client of its own, like one per process; closed
    afterwards."""
    with ExitStack() as stack:

        def make(**kwargs: Any) -> RedisBus:
            client = redis_cluster.client()
            stack.callback(client.close)
            made = RedisBus(client, prefix=cluster_prefix, block_ms=300, **kwargs)
            stack.callback(made.close)
            return made

        yield make


def test_one_blocking_reader_per_master_whatever_the_number_of_tenants(
        new_bus: Callable[..., RedisBus], redis_cluster: Cluster,  # noqa: F811
        cluster_prefix: str) -> None:  # noqa: F811
    """50 tenants over every master: the servers see one blocked reader connection per
    master, all at once (not one per tenant or slot, nor one for the whole cluster in
    turn); each reader makes at most one blocking read per round; every change arrives."""
    a, b = new_bus(origin="proc-a"), new_bus(origin="proc-b")
    tenants = [f"tenant-{i}" for i in range(50)]
    admin = redis_cluster.client()
    try:
        owner = {t: admin.get_node_from_key(stream_key(cluster_prefix, t)).port
                 for t in tenants}
        slots = {admin.keyslot(stream_key(cluster_prefix, t)) for t in tenants}
    finally:
        admin.close()
    masters = redis_cluster.masters()
    assert set(owner.values()) == set(masters) and len(slots) > len(masters)
    inbox = Inbox()
    a.subscribe(inbox)
    for tenant in tenants:
        a.follow(tenant)

    def one_blocked_reader_on_each_master() -> bool:
        blocked = {port: redis_cluster.blocked(port, a.reader_client_name) for port in masters}
        assert all(n <= 1 for n in blocked.values()), blocked  # never two on one master
        return all(n == 1 for n in blocked.values())

    eventually(one_blocked_reader_on_each_master, WAIT, "one blocked reader per master")
    readers = [t.name for t in threading.enumerate()
               if t.name.startswith("reactive_nb-bus-redis-")]
    assert sorted(readers) == sorted(f"reactive_nb-bus-redis-{s.node}"
                                     for s in a.reader_stats())
    assert len(readers) == len(masters)

    sent = [Change(t, frozenset({"agent"}), "proc-b") for t in tenants]
    for change in sent:
        b.publish(change)
    got = inbox.until({c.id for c in sent})
    assert sorted(got, key=lambda c: c.tenant) == sorted(sent, key=lambda c: c.tenant)
    stats = a.reader_stats()
    assert {int(s.node.rsplit(":", 1)[1]) for s in stats} == set(masters)
    assert sum(s.tenants for s in stats) == len(tenants)
    for s in stats:
        assert 0 < s.blocking_reads <= s.rounds, s  # one blocking read per round at most
    one_blocked_reader_on_each_master()
    assert not a.down


def test_streams_of_a_half_migrated_slot_lose_nothing(
        new_bus: Callable[..., RedisBus], redis_cluster: Cluster,  # noqa: F811
        cluster_prefix: str, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """Two followed tenants whose streams share a slot; one stream migrated, the other
    not: reading both is refused (TRYAGAIN, seen on the servers) until the slot is given
    to its new master. Nothing is lost, no gap, and the bus never says Redis is down."""
    from redis.crc import key_slot

    gaps: list[str] = []
    a, b = new_bus(origin="proc-a", on_gap=gaps.append), new_bus(origin="proc-b")
    seen: dict[int, str] = {}
    pair: list[str] = []
    for i in range(100_000):
        name = f"pair-{i}"
        slot = key_slot(stream_key(cluster_prefix, name).encode())
        if slot in seen:
            pair = [seen[slot], name]
            break
        seen[slot] = name
    assert pair, "two tenants whose streams share a slot"
    inbox = Inbox()
    a.subscribe(inbox)
    first = [Change(t, frozenset({"agent"}), "proc-b") for t in pair]
    for tenant in pair:
        a.follow(tenant)
    for change in first:
        b.publish(change)
    inbox.until({c.id for c in first})
    source = redis_cluster.master_of(slot)
    target = next(p for p in redis_cluster.masters() if p != source)
    before = sum(redis_cluster.errors(p, "TRYAGAIN") for p in (source, target))
    with caplog.at_level(logging.DEBUG, logger="reactive_nb.stores.bus"), \
            redis_cluster.migrating(slot, target):
        redis_cluster.migrate(source, target, [stream_key(cluster_prefix, pair[0])])
        during = [Change(t, frozenset({"message"}), "proc-b") for t in pair]
        for change in during:
            b.publish(change)  # one key each: ASK, then the target takes it
        eventually(lambda: sum(redis_cluster.errors(p, "TRYAGAIN") for p in (source, target))
                   > before, WAIT, "the reader to be refused with TRYAGAIN")
        # ... for longer than redis-py's own retries: the bus's reader hears of it.
        eventually(lambda: any("slot moving" in r.getMessage() for r in caplog.records),
                   WAIT, "the reader to retry a read refused while the slot moves")
        redis_cluster.finish_migration(slot, source, target)
        got = inbox.until({c.id for c in during})
    assert sorted(got, key=lambda c: c.tenant) == sorted(during, key=lambda c: c.tenant)
    assert gaps == []
    assert not a.down and not b.down
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]
    eventually(lambda: reader_on(a, target), WAIT, "A's bus to read from the new master")
    redis_cluster.wait_ok()


# --- multi-key scripts while their slot is half migrated -----------------------------------

def test_scripts_refused_while_their_slot_migrates_are_retried(
        redis_cluster: Cluster, cluster_prefix: str) -> None:  # noqa: F811
    """A version bump with a once key, and a lease claim, touch two keys of the tenant's
    slot: with one key migrated and not the other, the cluster refuses them (TRYAGAIN).
    The stores run them again after a tiny back-off: when the slot settles meanwhile (here
    between two attempts, by the injected sleep) the call succeeds, and the breaker never
    hears of it; when it does not, the last error is one the breaker counts."""
    client = redis_cluster.client()
    tenant = "moving"
    calls: list[float] = []
    settle: list[tuple[int, int]] = []  # (source, target) to finish at the next sleep, if any

    def sleep(delay: float) -> None:
        calls.append(delay)
        if settle:
            redis_cluster.finish_migration(slot, *settle.pop())

    retry = SlotRetry(sleep=sleep)
    versions = RedisVersions(client, prefix=cluster_prefix, slot_retry=retry)
    leases = RedisLeases(client, prefix=cluster_prefix, slot_retry=retry)
    try:
        versions_key = f"{cluster_prefix}:{{{tenant}}}:versions"
        slot = client.keyslot(versions_key)
        assert versions.bump(tenant, ["agent"]) == {"agent": 1}
        claim = leases.claim(tenant, "k", 1, {"agent": 1})
        leases.release(claim, "k", ran=True)  # the key's done stream now exists
        source = redis_cluster.master_of(slot)
        target = next(p for p in redis_cluster.masters() if p != source)

        with redis_cluster.migrating(slot, target):
            redis_cluster.migrate(source, target, [versions_key])
            with pytest.raises(redis_errors()):  # never settles: an outage, as before
                versions.bump(tenant, ["agent"], once_id="w-1")
            assert len(calls) == SLOT_ATTEMPTS - 1
            assert int(client.hget(versions_key, "agent")) == 1  # a refused script never ran
            calls.clear()
            settle.append((source, target))
            assert versions.bump(tenant, ["agent"], once_id="w-1") == {"agent": 2}
            assert len(calls) == 1 and redis_cluster.master_of(slot) == target
        assert versions.bump(tenant, ["agent"], once_id="w-1") is None  # once, really

        # Back to the source, the done stream left behind: the claim is refused there.
        with redis_cluster.migrating(slot, source):
            redis_cluster.migrate(target, source, [versions_key])
            calls.clear()
            settle.append((target, source))
            claim = leases.claim(tenant, "k", 1, {"agent": 2})
            assert claim.ours and len(calls) == 1
        leases.release(claim, "k", ran=True)
    finally:
        leases.close()
        client.close()
    redis_cluster.wait_ok()


# --- lease announcements --------------------------------------------------------------------

def test_an_announcement_on_the_cluster_carries_the_counters_of_the_tenants_slot_only(
        redis_cluster: Cluster, cluster_prefix: str) -> None:  # noqa: F811
    """A tenant's counters live in its slot and the unscoped ones in the default tenant's:
    one script may not read both on a cluster (CROSSSLOT). The announcement carries the
    entry and the tenant's counters; the follower reads the unscoped ones itself."""
    import pandas as pd

    from reactive_nb.stores.cache import RedisCache

    client = redis_cluster.client()
    cache = RedisCache(client, prefix=cluster_prefix)
    versions = RedisVersions(client, prefix=cluster_prefix)
    a, b = (RedisLeases(client, prefix=cluster_prefix, cache=cache, versions=versions)
            for _ in range(2))
    try:
        tenant, scopes = "acme", ("acme", DEFAULT_TENANT)
        assert client.keyslot(versions.redis_key(tenant)) != client.keyslot(
            versions.redis_key(DEFAULT_TENANT))
        versions.bump(tenant, ["agent"])
        mine = a.claim(tenant, "k", 1, {"agent": 1}, scopes=scopes)
        theirs = b.claim(tenant, "k", 1, {"agent": 1}, scopes=scopes)
        frame = pd.DataFrame({"n": [1]})
        assert cache.set(tenant, "k", frame, {"agent": 1}, None)
        a.release(mine, "k", ran=True)
        announced = b.wait(tenant, "k", theirs.mark, timeout=WAIT)
        assert announced is not None and announced.entry is not None
        assert set(announced.counters) == {tenant}
        assert announced.counters[tenant]["agent"] == 1
        assert announced.counters[tenant][EPOCH] == versions.get(tenant, [EPOCH])[EPOCH]
        late = b.claim(tenant, "k", 1, {"agent": 1}, scopes=scopes)
        assert late.done and late.announcement is not None
        assert set(late.announcement.counters) == {tenant}
    finally:
        a.close()
        b.close()
        client.close()
