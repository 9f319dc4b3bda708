"""The Redis cache: entries shared by every process using the same server and prefix,
stored as Arrow IPC streams (see :mod:`reactive_nb.stores.cache.arrow`)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from reactive_nb.stores.cache.arrow import (
    CorruptEntry,
    from_arrow_bytes,
    ipc_stream,
    to_arrow_table,
)
from reactive_nb.stores.cache.base import (
    DEFAULT_MAX_BYTES,
    EXTENDED_FORMAT,
    FORMAT_VERSION,
    FORMATS,
    CacheEntry,
    WarnOnce,
    expiry,
)

if TYPE_CHECKING:
    import pandas as pd
    import redis

    from reactive_nb.stores.health import Breaker

# Every module of the package logs under the package's name.
logger = logging.getLogger("reactive_nb.stores.cache")


def _glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis MATCH pattern."""
    return "".join("\\" + ch if ch in "\\*?[]" else ch for ch in text)


class RedisCache:
    """Entries in Redis, shared by every process using the same server and prefix.

    Layout: one hash per entry, ``<prefix>:{<tenant>}:cache:<key>``, with fields
    ``meta`` (compact JSON: format, versions, created_at, expires_at, nbytes) and
    ``arrow`` (the frame as an Arrow IPC stream). A TTL is also set as a Redis EXPIRE
    (whole seconds, at least 1) so Redis reclaims the memory, but ``expires_at`` is what
    ``get`` honours. ``max_bytes`` bounds the Arrow payload of one entry; the total is
    Redis's business (configure ``maxmemory-policy``), so :attr:`nbytes` is -1.

    An entry that cannot be read (corrupt, or another format) is a miss: it is deleted
    and logged (a warning the first time). A frame that would not read back identical
    (see :func:`to_arrow_bytes`) is not stored: ``set`` returns False with one debug line,
    and the caller serves it uncached. Redis errors propagate; with a ``breaker`` (see
    :mod:`reactive_nb.stores.health`) every call first asks it, and raises
    ``StoreUnavailable`` at once while it is open. Works with ``decode_responses`` on or
    off; the client belongs to the caller and :meth:`close` does not close it.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "rnb",
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
        breaker: Breaker | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self.max_bytes = max_bytes
        self.clock = clock  # time.time() seconds; tests replace it
        self.breaker = breaker
        self._warn = WarnOnce()

    def _guard(self) -> None:
        if self.breaker is not None:
            self.breaker.check()

    @property
    def nbytes(self) -> int:
        """Not tracked: always -1 (Redis holds the entries, and other processes add some)."""
        return -1

    def redis_key(self, tenant: str, key: str) -> str:
        """The hash holding ``key``'s entry (its tenant a hash tag)."""
        return f"{self._prefix}:{{{tenant}}}:cache:{key}"

    def get(self, tenant: str, key: str,
            valid: Callable[[Mapping[str, int]], bool] | None = None) -> CacheEntry | None:
        import redis as redis_lib
        from redis.client import NEVER_DECODE

        self._guard()
        rkey = self.redis_key(tenant, key)
        try:
            # NEVER_DECODE: the Arrow payload is binary even on a decode_responses client.
            client: Any = self._client  # execute_command is untyped
            raw: Any = client.execute_command("HGETALL", rkey, **{NEVER_DECODE: []})
        except redis_lib.ResponseError as exc:  # e.g. WRONGTYPE: not one of our hashes
            self._drop_corrupt(rkey, exc)
            return None
        if not raw:
            return None
        try:
            return entry_from_fields(raw, self.clock(), valid)
        except CorruptEntry as exc:  # anything unreadable is a miss, never an error
            self._drop_corrupt(rkey, exc)
            return None

    def _drop_corrupt(self, rkey: str, exc: BaseException) -> None:
        self._warn(
            "corrupt", "unreadable cache entry %s (%s: %s); deleted, treated as a miss",
            rkey, type(exc).__name__, exc,
        )
        self._client.delete(rkey)

    def set(
        self,
        tenant: str,
        key: str,
        df: pd.DataFrame,
        versions: Mapping[str, int],
        ttl: float | None,
    ) -> bool:
        self._guard()
        rkey = self.redis_key(tenant, key)
        try:
            table, extended = to_arrow_table(df)
            payload = ipc_stream(table)
        except Exception as exc:  # a frame Arrow cannot carry intact: served uncached
            self._client.delete(rkey)  # the new result supersedes the old one
            logger.debug("not caching %s: it would not read back identical (%s: %s)",
                         rkey, type(exc).__name__, exc)
            return False
        if len(payload) > self.max_bytes:
            # The new result supersedes the old one even when it cannot be kept.
            self._client.delete(rkey)
            self._warn(
                "too-large",
                "not caching %s: its Arrow form takes %d bytes, more than max_bytes=%d",
                rkey, len(payload), self.max_bytes,
            )
            return False
        now = self.clock()
        meta = {
            "format": EXTENDED_FORMAT if extended else FORMAT_VERSION,
            "versions": {str(k): int(v) for k, v in versions.items()},
            "created_at": now,
            "expires_at": expiry(now, ttl),
            "nbytes": len(payload),
        }
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(rkey)
        pipe.hset(rkey, mapping={"meta": json.dumps(meta, separators=(",", ":")),
                                 "arrow": payload})
        if ttl is not None:
            pipe.expire(rkey, max(1, math.ceil(ttl)))
        pipe.execute()
        return True

    def delete(self, tenant: str, key: str) -> None:
        self._guard()
        self._client.delete(self.redis_key(tenant, key))

    def clear(self, tenant: str | None = None) -> None:
        self._guard()
        prefix = _glob_escape(self._prefix)
        tag = "*" if tenant is None else _glob_escape(tenant)
        pattern = f"{prefix}:{{{tag}}}:cache:*"
        for batch in self._batches(self._client.scan_iter(match=pattern, count=1000), 500):
            self._client.delete(*batch)

    @staticmethod
    def _batches(keys: Iterator[Any], size: int) -> Iterator[list[Any]]:
        batch: list[Any] = []
        for k in keys:
            batch.append(k)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self) -> None:
        """Nothing to release: the Redis client belongs to the caller."""


def entry_from_fields(raw: Mapping[Any, Any], now: float,
                      valid: Callable[[Mapping[str, int]], bool] | None = None
                      ) -> CacheEntry | None:
    """The entry held by an entry hash's fields (``meta`` and ``arrow``, as bytes or str
    keys), as of ``now``: None when expired or not ``valid`` (tested on its versions before
    the frame is decoded). Raises :class:`CorruptEntry` for anything unreadable. Also reads
    the copy a lease announcement carries (:mod:`reactive_nb.stores.lease`)."""
    fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    try:
        meta = _parse_meta(fields.get("meta"))
    except Exception as exc:
        raise _unreadable(exc) from None
    expires_at = meta["expires_at"]
    # Past expires_at is a miss even before Redis's EXPIRE (whole seconds) fires.
    if expires_at is not None and now >= expires_at:
        return None
    if valid is not None and not valid(meta["versions"]):
        return None  # stale: not worth decoding (errors of valid() are the caller's)
    payload = fields.get("arrow")
    if not isinstance(payload, bytes):
        raise CorruptEntry("no arrow field")
    try:
        df = from_arrow_bytes(payload)
    except Exception as exc:
        raise _unreadable(exc) from None
    return CacheEntry(df, meta["versions"], meta["created_at"], expires_at, meta["nbytes"])


def _unreadable(exc: Exception) -> CorruptEntry:
    return exc if isinstance(exc, CorruptEntry) else CorruptEntry(f"{type(exc).__name__}: {exc}")


def _parse_meta(raw: object) -> dict[str, Any]:
    if not isinstance(raw, (bytes, str)):
        raise CorruptEntry("no meta field")
    meta = json.loads(raw)
    if not isinstance(meta, dict) or meta.get("format") not in FORMATS:
        raise CorruptEntry(f"unknown format {raw!r:.100}")
    versions, created, expires, nbytes = (
        meta["versions"], meta["created_at"], meta["expires_at"], meta["nbytes"])
    if not (
        isinstance(versions, dict)
        and all(isinstance(k, str) and type(v) is int for k, v in versions.items())
        and isinstance(created, (int, float))
        and (expires is None or isinstance(expires, (int, float)))
        and type(nbytes) is int
    ):
        raise CorruptEntry(f"malformed meta {raw!r:.100}")
    return meta
