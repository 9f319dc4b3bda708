"""The Redis stores' own connection pools, made from the caller's client, and what differs
on a Redis Cluster (one helper each, so the stores do not test the client's type)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

__all__ = ["client_from_url", "cluster_url", "disconnect", "is_cluster", "own_client",
           "slot_groups"]

# Entries a pool adds to its own kwargs (registries, maintenance handlers, caches) belong to
# that pool; those we set ourselves are replaced.
_NOT_COPIED = {
    "himport_registry", "maint_notifications_pool_handler", "maint_notifications_config",
    "oss_cluster_maint_notifications_handler", "orig_host_address", "orig_socket_timeout",
    "orig_socket_connect_timeout", "cache", "cache_config", "event_dispatcher",
    "retry", "retry_on_error", "retry_on_timeout", "socket_timeout", "client_name",
    "decode_responses", "protocol", "legacy_responses", "max_connections",
}
# Per-node entries: a cluster client sets them for each node it discovers.
_NODE_ONLY = {"host", "port", "db", "connection_pool", "redis_connect_func"}


def is_cluster(client: object) -> bool:
    """Whether ``client`` is a redis-py ``RedisCluster`` (keys of one command must then
    share a hash slot)."""
    if not hasattr(client, "nodes_manager"):  # cheap test first: no import for plain clients
        return False
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def own_client(client: redis.Redis, name: str, block_ms: int) -> redis.Redis:
    """The store's own client (and connection pool), to the same server or cluster as
    ``client``.

    Same address, database, credentials and TLS; but RESP2 with bytes replies (the parsing
    relies on their shape), a read timeout longer than a blocking read, a short connect
    timeout, and no retries inside redis-py: the stores handle outages themselves
    (back-off, one warning, holding changes, resuming streams, detecting gaps), and a
    publisher never waits on redis-py's own back-off (10 retries, ~4 s, for a client made
    with ``redis.Redis(host=...)``). The blocking reader holds one connection of the pool;
    publishing and follow() use others, so a blocking read never delays them. For a
    ``RedisCluster`` the same settings apply to every node; MOVED and ASK redirections are
    still followed (they are not retries), and a failed node makes the client reload the
    slot map before the next command.
    """
    from redis import ConnectionPool, Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if is_cluster(client):
        cluster: redis.Redis = _own_cluster_client(client, name, block_ms)
        return cluster
    pool = client.connection_pool
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k not in _NOT_COPIED}
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


def _own_cluster_client(client: Any, name: str, block_ms: int) -> Any:
    from redis.backoff import NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.retry import Retry

    nodes = client.get_nodes() or client.nodes_manager.startup_nodes.values()
    startup = [ClusterNode(node.host, node.port)  # type: ignore[no-untyped-call]
               for node in nodes]
    kwargs: dict[str, Any] = {}
    for node in nodes:
        connection = node.redis_connection
        if connection is not None:
            kwargs = {k: v for k, v in connection.connection_pool.connection_kwargs.items()
                      if k not in _NOT_COPIED | _NODE_ONLY}
            break
    connect_timeout = kwargs.get("socket_connect_timeout")
    kwargs["socket_connect_timeout"] = min(float(connect_timeout or 2.0), 2.0)
    return RedisCluster(startup_nodes=startup, socket_timeout=block_ms / 1000 + 2.0,
                        retry=Retry(NoBackoff(), 0), client_name=name,
                        decode_responses=False, protocol=2, **kwargs)


def disconnect(client: Any) -> None:
    """Close every connection of ``client`` (a store's own client), waking a thread blocked
    on one of them."""
    if is_cluster(client):
        client.disconnect_connection_pools()
    else:
        client.connection_pool.disconnect()


def slot_groups(client: Any, keys: Iterable[str]) -> list[list[str]]:
    """``keys`` grouped so that each group may be one multi-key command or one MULTI: all
    of them on a plain client, one group per hash slot on a cluster (first-seen order)."""
    keys = list(keys)
    if not is_cluster(client):
        return [keys] if keys else []
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(client.keyslot(key), []).append(key)
    return list(groups.values())


def cluster_url(url: str) -> tuple[str, bool]:
    """``url`` without its ``cluster`` query option, and whether that option was true
    (``true``, ``yes``, ``1``, ``on``; any case). A cluster URL naming a database other
    than 0 is a ValueError (a cluster has database 0 only)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flags = [v for k, v in query if k == "cluster"]
    if not flags:
        return url, False
    cluster = flags[-1].strip().lower() in ("true", "yes", "1", "on")
    rest = urlencode([(k, v) for k, v in query if k != "cluster"])
    if not cluster:
        return urlunsplit(parts._replace(query=rest)), False
    db = parts.path.strip("/") or dict(query).get("db", "0")
    if db != "0":
        raise ValueError(f"a Redis Cluster has database 0 only, not {db!r}")
    rest = urlencode([(k, v) for k, v in query if k not in ("cluster", "db")])
    return urlunsplit(parts._replace(query=rest, path="")), True


def client_from_url(url: str, **options: Any) -> Any:
    """A ``redis.Redis`` for ``url``, or a ``RedisCluster`` when it says ``cluster=true``
    (``redis://host:7000/0?cluster=true``: any node; the others are discovered)."""
    plain, cluster = cluster_url(url)
    if cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(plain, **options)
    import redis

    options.setdefault("health_check_interval", 30)
    return redis.Redis.from_url(plain, **options)
