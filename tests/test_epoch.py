"""Redis going backwards: a restart from an older snapshot (or a failover to a lagging
replica) brings counters back to values an old entry recorded. The epoch (the server's
run_id, read with the counters) makes such an entry stale anyway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import reactive_nb as rnb
from reactive_nb.stores.versions import RedisVersions
from tests.redis_server import RedisServer, need_redis_server
from tests.teamhub import create
from tests.teamhub import define_agents as define


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    need_redis_server()
    data = tmp_path / "redis"
    data.mkdir()
    own = RedisServer(data)
    own.start()
    try:
        yield own
    finally:
        own.stop()


def test_counters_from_an_older_snapshot_are_another_epoch(server: RedisServer) -> None:
    """The fault at the Versions level: after a restore the counters equal what an old
    entry recorded; the recorded snapshot must still not match."""
    client = server.client()
    try:
        versions = RedisVersions(client, prefix="rnb")
        versions.bump("acme", ["agent"])
        recorded = versions.snapshot("acme")  # what an entry computed now records
        old = server.save()
        versions.bump("acme", ["agent"])
        assert versions.get("acme", recorded) != recorded
        server.stop()
        server.restore(old)
        server.start()
        client.connection_pool.disconnect()  # the old connections died with the server
        assert versions.get("acme", ["agent"]) == {"agent": 1}  # counters went back ...
        assert versions.get("acme", recorded) != recorded  # ... the epoch did not
        assert versions.snapshot("acme") != recorded
        again = versions.snapshot("acme")
        assert versions.get("acme", again) == again  # and is stable while Redis runs
    finally:
        client.close()


def test_a_restored_redis_never_serves_an_entry_recorded_before(
        server: RedisServer, sqlite_url: str) -> None:
    """End to end: an entry cached before the snapshot matches the restored counters, and
    must still not be served."""
    create(sqlite_url)
    with rnb.connect(sqlite_url, redis=server.url, capture="local", workers=0) as db:
        agents = define(db)
        assert len(agents(organization_id="acme")) == 2  # cached at agent=0
        old = server.save()  # the snapshot holds that entry and agent=0
        db.execute("INSERT INTO agent (id, organization_id, name) VALUES (5, 'acme', 'eve')")
        assert len(agents(organization_id="acme")) == 3
        server.stop()
        server.restore(old)  # Redis comes back with agent=0 and the 2-row entry
        server.start()
        for _ in range(3):
            assert len(agents(organization_id="acme")) == 3  # never the stale 2
        hits = agents.stats.hits
        assert len(agents(organization_id="acme")) == 3
        assert agents.stats.hits == hits + 1  # and the cache works again


def test_a_redis_that_may_evict_counters_is_named_at_connect(
        server: RedisServer, sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Under an ``allkeys-*`` policy Redis may drop a counter hash: it comes back at 0 with
    no epoch change, and an old entry could look fresh again. That is said at connect."""
    import logging

    create(sqlite_url)
    client = server.client()
    try:
        with caplog.at_level(logging.WARNING, logger="reactive_nb"):
            rnb.connect(sqlite_url, redis=server.url, workers=0).close()
            assert "maxmemory-policy" not in caplog.text  # noeviction: nothing to say
            client.config_set("maxmemory-policy", "allkeys-lru")
            rnb.connect(sqlite_url, redis=server.url, workers=0).close()
    finally:
        client.close()
    warned = [r for r in caplog.records if "maxmemory-policy is allkeys-lru" in r.getMessage()]
    assert len(warned) == 1 and "noeviction" in warned[0].getMessage()
