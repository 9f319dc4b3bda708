"""ReactiveDB on a real local Redis Cluster (tests/cluster.py): the URL form, live queries
shared by two ReactiveDBs, and the cluster's own events -- a slot migration with live
queries on the slot (ASK while it moves, MOVED after) and a master failover (the replica
is promoted; its run_id is another epoch, so entries recorded before are stale)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import reactive_nb as rnb
from reactive_nb.events import DEFAULT_TENANT
from reactive_nb.stores.bus.client import cluster_url, is_cluster
from reactive_nb.stores.versions import EPOCH
from tests.cluster import HOST, Cluster, cluster_prefix, redis_cli, redis_cluster  # noqa: F401
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
    assert is_cluster(a._redis) and is_cluster(b._redis)
    assert a.leases is not None and b.leases is not None
    live_a = define(a).live(organization_id="acme").wait(WAIT)
    live_b = define(b).live(organization_id="acme").wait(WAIT)
    insert(a, 10, "from_a")
    converge(live_b, b, "from_a")
    converge(live_a, a, "from_a")
    insert(b, 11, "from_b")
    converge(live_a, a, "from_b")


def _node_id(port: int) -> str:
    return redis_cli("-h", HOST, "-p", str(port), "cluster", "myid").strip()


def _setslot(cluster: Cluster, slot: int, *args: str, port: int) -> None:
    redis_cli("-h", HOST, "-p", str(port), "cluster", "setslot", str(slot), *args)
    del cluster


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
        versions_key = f"{cluster_prefix}:{{{DEFAULT_TENANT}}}:versions"
        slot = admin.keyslot(versions_key)
        source = redis_cluster.master_of(slot)
        target = next(p for p in redis_cluster.masters() if p != source)
        source_id, target_id = _node_id(source), _node_id(target)
        _setslot(redis_cluster, slot, "importing", source_id, port=target)
        _setslot(redis_cluster, slot, "migrating", target_id, port=source)

        def migrate(keys: list[str]) -> None:
            if keys:
                redis_cli("-h", HOST, "-p", str(source), "migrate", HOST, str(target), "",
                          "0", "5000", "keys", *keys)

        # Every key moved, as one batch of `redis-cli --cluster reshard` does, but the
        # slot still the source's: each command is answered ASK, then ASKING on the target.
        out = redis_cli("-h", HOST, "-p", str(source), "cluster", "getkeysinslot", str(slot),
                        "1000")
        assert out.split(), "the tenant has keys in its slot"
        migrate(out.split())
        insert(a, 20, "while_moving")
        converge(live_b, b, "while_moving")
        for port in redis_cluster.masters():
            _setslot(redis_cluster, slot, "node", target_id, port=port)
        eventually(lambda: redis_cluster.master_of(slot) == target, WAIT, "slot moved")
        insert(a, 21, "after_move")  # the clients' slot maps are stale: MOVED
        converge(live_b, b, "after_move")
        insert(b, 22, "from_b_after_move")
        converge(live_b, b, "from_b_after_move")
    finally:
        admin.close()
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
