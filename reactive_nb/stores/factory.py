"""Open one database's stores: the cache, version counters, change bus, leases and the
health policy over them, in memory or in Redis (one server or a Redis Cluster).

Keys are named by the database itself (``model.identity``), not by its URL, so two
kernels reaching one database by different URLs share, and two databases never do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reactive_nb.stores.health import StoreHealth, redis_errors

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from reactive_nb.stores.bus import Bus
    from reactive_nb.stores.cache import Cache
    from reactive_nb.stores.lease import RedisLeases
    from reactive_nb.stores.versions import Versions

logger = logging.getLogger("reactive_nb")


@dataclass
class Stores:
    """What a ReactiveDB keeps its state in; ``redis`` is None for the memory twins."""

    cache: Cache
    versions: Versions
    bus: Bus
    #: Elects one run per result across processes; None without Redis.
    leases: RedisLeases | None
    health: StoreHealth
    redis: Any
    owns_redis: bool

    def close(self) -> None:
        """Release the cache, counters and client (the bus and leases close earlier: the
        caller stops its threads first)."""
        self.health.close()  # stops the replay thread while the client is still open
        self.cache.close()
        self.versions.close()
        if self.redis is not None and self.owns_redis:
            self.redis.close()


def open_stores(redis: Any, engine: Engine, *, key_prefix: str | None, cache_bytes: int,
                on_gap: Callable[[str], None]) -> Stores:
    """The stores for ``redis=`` (None, a URL or a client). ``on_gap(tenant)`` is told when
    the bus may have missed changes of a tenant (its stream was trimmed or lost)."""
    client = redis_client(redis)
    if client is None:
        from reactive_nb.stores.bus import MemoryBus
        from reactive_nb.stores.cache import MemoryCache
        from reactive_nb.stores.versions import MemoryVersions

        versions: Versions = MemoryVersions()
        return Stores(MemoryCache(max_bytes=cache_bytes), versions, MemoryBus(), None,
                      StoreHealth(versions), None, False)
    from reactive_nb.stores.bus import RedisBus
    from reactive_nb.stores.cache import RedisCache
    from reactive_nb.stores.health import Breaker
    from reactive_nb.stores.lease import shared_leases
    from reactive_nb.stores.versions import RedisVersions

    prefix = key_prefix
    if prefix is None:  # keys named by the database itself, not by its URL
        from reactive_nb.model.identity import database_identity

        prefix = f"rnb:{database_identity(engine)}"
    warn_if_counters_may_be_evicted(client)
    breaker = Breaker()  # every store stops asking a hung Redis; StoreHealth probes it
    versions = RedisVersions(client, prefix=prefix, breaker=breaker)
    bus = RedisBus(client, prefix=prefix, on_gap=on_gap, may_send=breaker.allows)
    cache = RedisCache(client, prefix=prefix, max_bytes=cache_bytes, breaker=breaker)
    return Stores(cache, versions, bus, shared_leases(client, bus, cache, versions),
                  StoreHealth(versions, redis_errors()), client, isinstance(redis, str))


def warn_if_counters_may_be_evicted(client: Any) -> str | None:
    """Warn when Redis may evict the version counters (``maxmemory-policy allkeys-*``):
    a dropped counter hash comes back at 0 with no epoch change, so after as many writes
    as it had counted an old entry would look fresh again. ``noeviction`` and the
    ``volatile-*`` policies never evict them (they have no TTL). Returns the policy, or
    None when Redis will not say (``CONFIG`` disabled, as on some managed services)."""
    try:
        reply = client.config_get("maxmemory-policy")
    except Exception:  # CONFIG may be renamed or refused (managed Redis): nothing to tell
        return None
    if "maxmemory-policy" not in reply:  # a cluster: one reply per node
        reply = next((r for r in reply.values() if isinstance(r, dict)), {})
    policy = reply.get("maxmemory-policy")
    policy = policy.decode() if isinstance(policy, bytes) else policy
    if isinstance(policy, str) and policy.startswith("allkeys-"):
        logger.warning("reactive_nb: Redis maxmemory-policy is %s, so it may evict version "
                       "counters and a stale result could look fresh; use noeviction or a "
                       "volatile-* policy for this Redis", policy)
    return policy if isinstance(policy, str) else None


def redis_client(redis: Any) -> Any:
    """The client of ``redis=``: a URL gets short socket timeouts and no retries of its
    own (the circuit breaker in ``stores.health`` handles outages); a client passed in
    (``redis.Redis`` or ``redis.cluster.RedisCluster``) is used as it is.

    A Redis Cluster is named by the URL of any of its nodes with ``cluster=true``:
    ``redis://host:7000/0?cluster=true`` (``rediss://`` and credentials as usual; the
    database must be 0, the only one a cluster has). The other nodes are discovered from
    it. Every key of a tenant shares one hash slot (``{tenant}`` in the key), so the cache,
    versions, bus and leases work unchanged; the epoch is the ``run_id`` of the node
    owning the tenant's slot, so a failover or a resharding of that slot makes the
    tenant's cached entries stale (recomputed once), never wrongly fresh.
    """
    if not isinstance(redis, str):
        return redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from reactive_nb.stores.bus.client import client_from_url
    from reactive_nb.stores.health import REDIS_CONNECT_TIMEOUT, REDIS_READ_TIMEOUT

    return client_from_url(redis, socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
                           socket_timeout=REDIS_READ_TIMEOUT, retry=Retry(NoBackoff(), 0))
