"""The Redis bus's own connection pool, made from the caller's client."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis

__all__ = ["own_client"]


def own_client(client: redis.Redis, name: str, block_ms: int) -> redis.Redis:
    """The bus's own client (and connection pool), to the same server as ``client``.

    Same address, database, credentials and TLS; but RESP2 with bytes replies (the parsing
    below relies on their shape), a read timeout longer than a blocking read, a short
    connect timeout, and no retries inside redis-py: the bus handles outages itself
    (back-off, one warning, holding changes, resuming streams, detecting gaps), and a
    publisher never waits on redis-py's own back-off (10 retries, ~4 s, for a client made
    with ``redis.Redis(host=...)``). The blocking reader holds one connection of the pool;
    publishing and follow() use others, so a blocking read never delays them.
    """
    from redis import ConnectionPool, Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    pool = client.connection_pool
    # Entries the pool adds to its own kwargs (registries, maintenance handlers, caches)
    # belong to that pool; those we set ourselves are replaced.
    not_copied = {
        "himport_registry", "maint_notifications_pool_handler", "maint_notifications_config",
        "oss_cluster_maint_notifications_handler", "orig_host_address", "orig_socket_timeout",
        "orig_socket_connect_timeout", "cache", "cache_config", "event_dispatcher",
        "retry", "retry_on_error", "retry_on_timeout", "socket_timeout", "client_name",
        "decode_responses", "protocol", "legacy_responses", "max_connections",
    }
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k not in not_copied}
    connect_timeout = kwargs.get("socket_connect_timeout")
    kwargs["socket_connect_timeout"] = min(float(connect_timeout or 2.0), 2.0)
    reader_pool = ConnectionPool(
        connection_class=pool.connection_class,
        socket_timeout=block_ms / 1000 + 2.0,
        retry=Retry(NoBackoff(), 0),
        client_name=name,
        decode_responses=False,
        protocol=2,
        **kwargs,
    )
    return Redis(connection_pool=reader_pool)
