"""Version counters: the same suite on the memory and the Redis implementation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reactive_nb.events import ALL_TABLES
from reactive_nb.stores.versions import (
    EPOCH,
    ONCE_TTL,
    MemoryVersions,
    RedisVersions,
    Versions,
)
from tests.cluster import cluster_prefix, redis_cluster  # noqa: F401 - fixtures

BACKENDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    # A client that decodes replies to str: the implementation must not care.
    pytest.param("redis-str", marks=pytest.mark.redis),
    # A local Redis Cluster (tests/cluster.py): a tenant's keys in one slot.
    pytest.param("cluster", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
def make_versions(request: pytest.FixtureRequest) -> Iterator[Callable[[], Versions]]:
    """A factory of Versions sharing one store (one Redis prefix, or one memory object),
    each Redis one on its own client, as separate processes would be."""
    opened: list[Any] = []
    if request.param == "memory":
        shared = MemoryVersions()

        def make() -> Versions:
            return shared
    else:
        import redis

        cluster = request.param == "cluster"
        if cluster:
            prefix = request.getfixturevalue("cluster_prefix")
            nodes = request.getfixturevalue("redis_cluster")
        else:
            url = request.getfixturevalue("redis_url")
            prefix = request.getfixturevalue("redis_prefix")
        decode = request.param == "redis-str"

        def make() -> Versions:
            client = (nodes.client() if cluster
                      else redis.Redis.from_url(url, decode_responses=decode))
            versions = RedisVersions(client, prefix=prefix)
            opened.append((versions, client))
            return versions

    yield make
    for versions, client in opened:
        versions.close()
        client.close()


def counters(versions: Versions, tenant: str) -> dict[str, int]:
    """The tenant's counters without the epoch (which every snapshot includes)."""
    return {t: v for t, v in versions.snapshot(tenant).items() if t != EPOCH}


@pytest.fixture
def versions(make_versions: Callable[[], Versions]) -> Versions:
    return make_versions()


def test_implements_protocol(versions: Versions) -> None:
    assert isinstance(versions, Versions)


def test_unknown_tenant_and_tables_are_zero(versions: Versions) -> None:
    assert counters(versions, "acme") == {}
    assert versions.get("acme", ["agent", ALL_TABLES]) == {"agent": 0, ALL_TABLES: 0}
    assert versions.get("acme", []) == {}


def test_bump_returns_new_values_and_is_visible(versions: Versions) -> None:
    assert versions.bump("acme", ["agent", ALL_TABLES]) == {"agent": 1, ALL_TABLES: 1}
    assert versions.bump("acme", ["agent", "message"]) == {"agent": 2, "message": 1}
    assert counters(versions, "acme") == {"agent": 2, "message": 1, ALL_TABLES: 1}
    assert versions.get("acme", ["message", "organization"]) == {
        "message": 1, "organization": 0}
    values = versions.snapshot("acme")
    assert all(type(v) is int for v in values.values())


def test_a_table_named_twice_is_bumped_once(versions: Versions) -> None:
    assert versions.bump("acme", ["agent", "agent"]) == {"agent": 1}
    assert versions.get("acme", ["agent", "agent"]) == {"agent": 1}


def test_bump_of_nothing_changes_nothing(versions: Versions) -> None:
    assert versions.bump("acme", []) == {}
    assert counters(versions, "acme") == {}


def test_tenants_are_isolated(versions: Versions) -> None:
    versions.bump("acme", ["agent"])
    versions.bump("acme", ["agent"])
    versions.bump("globex", ["message"])
    assert counters(versions, "acme") == {"agent": 2}
    assert counters(versions, "globex") == {"message": 1}
    assert versions.get("globex", ["agent"]) == {"agent": 0}


def test_concurrent_bumps_are_not_lost(make_versions: Callable[[], Versions]) -> None:
    threads_n, bumps_n = 8, 200
    instances = [make_versions() for _ in range(2)]
    start = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def work(v: Versions) -> None:
        try:
            start.wait(timeout=10)
            for _ in range(bumps_n):
                v.bump("acme", ["agent", ALL_TABLES])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(instances[i % 2],))
               for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    total = threads_n * bumps_n
    assert counters(instances[0], "acme") == {"agent": total, ALL_TABLES: total}


def test_once_id_bumps_once(versions: Versions) -> None:
    assert versions.bump("acme", ["agent"], once_id="n1") == {"agent": 1}
    assert versions.bump("acme", ["agent", "message"], once_id="n1") is None
    assert counters(versions, "acme") == {"agent": 1}
    assert versions.bump("acme", ["agent"], once_id="n2") == {"agent": 2}
    # Without an id, every call bumps.
    assert versions.bump("acme", ["agent"]) == {"agent": 3}
    # Ids are per tenant.
    assert versions.bump("globex", ["agent"], once_id="n1") == {"agent": 1}


def test_once_id_without_tables_is_still_remembered(versions: Versions) -> None:
    assert versions.bump("acme", [], once_id="n1") == {}
    assert versions.bump("acme", ["agent"], once_id="n1") is None
    assert counters(versions, "acme") == {}


def test_once_id_across_instances_and_threads(make_versions: Callable[[], Versions]) -> None:
    """Processes hearing the same NOTIFY race to bump with the same id: one wins."""
    instances = [make_versions() for _ in range(4)]
    start = threading.Barrier(len(instances))
    results: list[dict[str, int] | None] = []
    lock = threading.Lock()

    def work(v: Versions) -> None:
        start.wait(timeout=10)
        r = v.bump("acme", ["agent", ALL_TABLES], once_id="pg:1234:42")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=work, args=(v,)) for v in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results, key=lambda r: r is not None) == [
        None, None, None, {"agent": 1, ALL_TABLES: 1}]
    assert counters(instances[-1], "acme") == {"agent": 1, ALL_TABLES: 1}


def test_memory_once_id_is_forgotten_after_the_window() -> None:
    now = [1000.0]
    versions = MemoryVersions(clock=lambda: now[0])
    assert versions.bump("acme", ["agent"], once_id="a") == {"agent": 1}
    now[0] += 300
    assert versions.bump("acme", ["agent"], once_id="b") == {"agent": 2}
    now[0] += ONCE_TTL - 300 - 1
    assert versions.bump("acme", ["agent"], once_id="a") is None
    now[0] += 1
    assert versions.bump("acme", ["agent"], once_id="a") == {"agent": 3}
    assert versions.bump("acme", ["agent"], once_id="b") is None
    assert versions.remembered_once_ids == 2  # expired ids are pruned, not kept forever


@pytest.mark.redis
def test_redis_layout(redis_client: Any, redis_prefix: str) -> None:
    """Other tools (and other languages) may read the counters: the layout is API."""
    versions = RedisVersions(redis_client, prefix=redis_prefix)
    versions.bump("acme", ["agent", ALL_TABLES], once_id="x1")
    assert redis_client.hgetall(f"{redis_prefix}:{{acme}}:versions") == {
        b"agent": b"1", b"*": b"1"}
    ttl = redis_client.ttl(f"{redis_prefix}:{{acme}}:once:x1")
    assert ONCE_TTL - 10 <= ttl <= ONCE_TTL
    # A counter written by someone else is read back.
    redis_client.hincrby(f"{redis_prefix}:{{acme}}:versions", "message", 5)
    assert versions.get("acme", ["message"]) == {"message": 5}
    versions.close()



# -- the epoch -----------------------------------------------------------------------------


def test_snapshot_always_includes_the_epoch(versions: Versions) -> None:
    """An entry records the epoch with its counters, so it is stale once the epoch moves.
    (The epoch is the tenant's: on a cluster, that of the node owning its slot.)"""
    epoch = versions.snapshot("acme")[EPOCH]
    assert type(epoch) is int
    assert versions.snapshot("acme") == {EPOCH: epoch}
    versions.bump("acme", ["agent"])
    assert versions.snapshot("acme") == {"agent": 1, EPOCH: epoch}
    assert versions.get("acme", [EPOCH]) == {EPOCH: epoch}
    assert versions.get("acme", ["agent", EPOCH, "message"]) == {
        "agent": 1, EPOCH: epoch, "message": 0}


def test_the_epoch_is_never_bumped(versions: Versions) -> None:
    epoch = versions.get("acme", [EPOCH])[EPOCH]
    assert versions.bump("acme", [EPOCH]) == {}
    assert versions.bump("acme", ["agent", EPOCH]) == {"agent": 1}
    assert versions.get("acme", [EPOCH, "agent"]) == {EPOCH: epoch, "agent": 1}


def test_instances_sharing_a_store_share_its_epoch(
        make_versions: Callable[[], Versions]) -> None:
    one, two = make_versions(), make_versions()
    assert one.get("acme", [EPOCH]) == two.get("acme", [EPOCH])


def test_each_memory_store_is_its_own_epoch() -> None:
    """Two in-process stores never share counters: their entries must never match."""
    one, two = MemoryVersions(), MemoryVersions()
    assert one.get("acme", [EPOCH]) != two.get("acme", [EPOCH])
    assert one.snapshot("acme") == one.snapshot("acme")
