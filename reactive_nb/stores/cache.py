"""The result cache: DataFrames by (tenant, key), with the versions they were computed at.

An entry is a frame plus the versions of its watched tables read before the handler
ran; the caller compares them with the current versions to decide freshness (see
:mod:`reactive_nb.stores.versions`). The cache itself only knows about size and TTL.

:class:`MemoryCache` is an LRU bounded by bytes, for one process. A hit costs O(1) in
the number of rows: it hands out a lazy copy-on-write copy of the stored frame.
:class:`RedisCache` shares entries between processes as Arrow IPC streams.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import redis

__all__ = ["DEFAULT_MAX_BYTES", "Cache", "CacheEntry", "MemoryCache", "RedisCache"]

logger = logging.getLogger(__name__)

#: Default size bound: 512 MiB of frames (memory) or of Arrow payload per entry (Redis).
DEFAULT_MAX_BYTES = 512 * 2**20

#: Version of the Redis entry layout; an entry with another version is a miss.
FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class CacheEntry:
    """A cached frame and what it was computed from.

    ``versions`` are the watched-table versions read before the run; ``created_at`` and
    ``expires_at`` are ``time.time()`` seconds (``expires_at`` None: no TTL). ``nbytes``
    is the frame's deep memory usage (memory cache) or its Arrow payload size (Redis).
    """

    df: pd.DataFrame
    versions: Mapping[str, int]
    created_at: float
    expires_at: float | None
    nbytes: int

    def __post_init__(self) -> None:
        if not isinstance(self.versions, MappingProxyType):
            object.__setattr__(self, "versions", MappingProxyType(dict(self.versions)))

    def expired(self, now: float) -> bool:
        """True once ``now`` has reached ``expires_at``."""
        return self.expires_at is not None and now >= self.expires_at


@runtime_checkable
class Cache(Protocol):
    """Where results are kept, per tenant and key."""

    def get(self, tenant: str, key: str,
            valid: Callable[[Mapping[str, int]], bool] | None = None) -> CacheEntry | None:
        """The entry, or None when it is missing, expired, or ``valid(versions)`` is False.

        ``valid`` runs before the frame is copied or decoded, so a stale entry costs
        neither; it is called without any lock held (it may talk to Redis).
        """
        ...

    def set(
        self,
        tenant: str,
        key: str,
        df: pd.DataFrame,
        versions: Mapping[str, int],
        ttl: float | None,
    ) -> bool:
        """Store ``df``; False (and one warning per cache) when it exceeds max_bytes."""
        ...

    def delete(self, tenant: str, key: str) -> None:
        """Forget one entry (no error when missing)."""
        ...

    def clear(self, tenant: str | None = None) -> None:
        """Forget the tenant's entries, or every entry when ``tenant`` is None."""
        ...

    def close(self) -> None:
        """Release what this cache owns (idempotent)."""
        ...

    @property
    def nbytes(self) -> int:
        """Bytes held, or -1 when the backend does not track it."""
        ...


def _expires_at(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else now + ttl


class _WarnOnce:
    """Logs a warning the first time each reason occurs, and debug lines after that."""

    def __init__(self) -> None:
        # Guards _seen only; logging happens after releasing it.
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def __call__(self, reason: str, msg: str, *args: object) -> None:
        with self._lock:
            first = reason not in self._seen
            self._seen.add(reason)
        logger.log(logging.WARNING if first else logging.DEBUG, msg, *args)


# --------------------------------------------------------------------------- memory


def _frame_nbytes(df: pd.DataFrame) -> int:
    """``df.memory_usage(deep=True).sum()``, computed per block instead of per column.

    The public call builds a Series per column and costs ~0.3 ms whatever the row count,
    most of a small query's miss overhead; summing the blocks gives the same number in a
    few microseconds. It uses pandas internals, so anything unexpected falls back.
    """
    try:
        import numpy as np
        from pandas._libs import lib

        total = int(df.index.memory_usage(deep=True))
        for block in df._mgr.blocks:
            values = block.values
            total += int(values.nbytes)
            if values.dtype == object:
                objects = lib.memory_usage_of_objects  # type: ignore[attr-defined]
                total += int(objects(np.asarray(values).ravel()))
        return total
    except Exception:
        return int(df.memory_usage(deep=True, index=True).sum())


def _copy_on_write() -> bool:
    """True when pandas copy-on-write is on (always with pandas >= 3)."""
    import pandas as pd

    if int(pd.__version__.split(".", 1)[0]) >= 3:
        return True  # the option is deprecated there and reading it warns
    return bool(pd.options.mode.copy_on_write is True)


def _lazy_copy(df: pd.DataFrame) -> pd.DataFrame:
    """A copy that cannot change ``df``: lazy (O(columns)) under copy-on-write.

    Without copy-on-write (pandas 2.x with the option off) a shallow copy would share
    writable buffers, so fall back to a deep copy: slower, never wrong.
    """
    copied: pd.DataFrame = df.copy(deep=not _copy_on_write())
    return copied


class MemoryCache:
    """An LRU of frames bounded by their total deep memory usage, with TTLs.

    ``get`` returns an entry whose ``df`` is a lazy copy-on-write copy of the stored
    frame, so a hit is O(1) in rows and a caller mutating its frame cannot change the
    cache. ``set`` stores a lazy copy too, so later changes to the caller's frame do
    not leak in. ``clock`` gives ``time.time()`` seconds; tests inject a fake one.
    """

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_bytes = max_bytes
        self.clock = clock  # time.time() seconds; tests replace it
        self._warn = _WarnOnce()
        # Guards _entries (in LRU order, oldest first) and _nbytes (their total size).
        # Held only for dict operations and O(columns) lazy copies, never while measuring
        # a frame (O(rows) for object columns) or logging.
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], CacheEntry] = OrderedDict()
        self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Total deep memory usage of the stored frames, in bytes."""
        with self._lock:
            return self._nbytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, tenant: str, key: str,
            valid: Callable[[Mapping[str, int]], bool] | None = None) -> CacheEntry | None:
        now = self.clock()
        with self._lock:
            entry = self._entries.get((tenant, key))
            if entry is None:
                return None
            if entry.expired(now):
                self._remove((tenant, key))
                return None
            self._entries.move_to_end((tenant, key))
        if valid is not None and not valid(entry.versions):
            return None
        return replace(entry, df=_lazy_copy(entry.df))

    def set(
        self,
        tenant: str,
        key: str,
        df: pd.DataFrame,
        versions: Mapping[str, int],
        ttl: float | None,
    ) -> bool:
        nbytes = _frame_nbytes(df)
        if nbytes > self.max_bytes:
            with self._lock:
                # The new result supersedes the old one even when it cannot be kept.
                self._remove((tenant, key))
            self._warn(
                "too-large",
                "not caching %s:%s: the frame takes %d bytes, more than max_bytes=%d",
                tenant, key, nbytes, self.max_bytes,
            )
            return False
        now = self.clock()
        entry = CacheEntry(_lazy_copy(df), versions, now, _expires_at(now, ttl), nbytes)
        with self._lock:
            self._remove((tenant, key))
            self._entries[(tenant, key)] = entry
            self._nbytes += nbytes
            while self._nbytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._nbytes -= evicted.nbytes
        return True

    def delete(self, tenant: str, key: str) -> None:
        with self._lock:
            self._remove((tenant, key))

    def clear(self, tenant: str | None = None) -> None:
        with self._lock:
            if tenant is None:
                self._entries.clear()
                self._nbytes = 0
                return
            for k in [k for k in self._entries if k[0] == tenant]:
                self._remove(k)

    def close(self) -> None:
        """Drop every entry."""
        self.clear()

    def _remove(self, k: tuple[str, str]) -> None:
        """Drop one entry; the caller holds the lock."""
        entry = self._entries.pop(k, None)
        if entry is not None:
            self._nbytes -= entry.nbytes


# --------------------------------------------------------------------------- Redis


def to_arrow_bytes(df: pd.DataFrame) -> bytes:
    """The frame, index included, as an Arrow IPC stream."""
    import pyarrow as pa

    # None: a RangeIndex is kept as metadata only, any other index as columns.
    table = pa.Table.from_pandas(df, preserve_index=None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def from_arrow_bytes(data: bytes) -> pd.DataFrame:
    """The inverse of :func:`to_arrow_bytes`, restoring object string columns."""
    import pyarrow as pa

    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    df: pd.DataFrame = table.to_pandas()
    _restore_object_strings(table, df)
    return df


def _restore_object_strings(table: pa.Table, df: pd.DataFrame) -> None:
    """Give back ``object`` dtype to string columns and index levels that had it.

    With pandas' default string dtype (pandas 3, or ``future.infer_string``), pyarrow
    turns every Arrow string column into ``str``, even when the pandas metadata says
    the column was ``object``. Rebuild those from Arrow (nulls become None).
    """
    import numpy as np
    import pandas as pd

    meta = table.schema.pandas_metadata or {}
    index_fields = [c for c in meta.get("index_columns", []) if isinstance(c, str)]

    def was_object_str(col: Mapping[str, Any]) -> bool:
        return bool(col.get("pandas_type") == "unicode" and col.get("numpy_type") == "object")

    def as_objects(field_name: str) -> Any:
        return table.column(field_name).to_numpy(zero_copy_only=False).astype(object)

    columns = [c for c in meta.get("columns", []) if c.get("field_name") not in index_fields]
    if len(columns) == df.shape[1]:
        for i, col in enumerate(columns):
            if was_object_str(col) and df.dtypes.iloc[i] != np.dtype(object):
                # A Series, not an array: pandas 3 would infer "str" again from an array.
                df.isetitem(i, pd.Series(as_objects(col["field_name"]), index=df.index,
                                         dtype=object, copy=False))

    by_field = {c.get("field_name"): c for c in meta.get("columns", [])}
    if len(index_fields) != df.index.nlevels or not any(
        was_object_str(by_field.get(f, {})) for f in index_fields
    ):
        return
    levels = []
    for level, name in enumerate(index_fields):
        values = df.index.get_level_values(level)
        if was_object_str(by_field.get(name, {})) and values.dtype != np.dtype(object):
            values = pd.Index(as_objects(name), dtype=object, name=values.name)
        levels.append(values)
    if df.index.nlevels == 1:
        df.index = levels[0]
    else:
        df.index = pd.MultiIndex.from_arrays(levels, names=df.index.names)


def _glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis MATCH pattern."""
    return "".join("\\" + ch if ch in "\\*?[]" else ch for ch in text)


class _CorruptEntry(ValueError):
    """A Redis entry that this version cannot read."""


class RedisCache:
    """Entries in Redis, shared by every process using the same server and prefix.

    Layout: one hash per entry, ``<prefix>:{<tenant>}:cache:<key>``, with fields
    ``meta`` (compact JSON: format, versions, created_at, expires_at, nbytes) and
    ``arrow`` (the frame as an Arrow IPC stream). A TTL is also set as a Redis EXPIRE
    (whole seconds, at least 1) so Redis reclaims the memory, but ``expires_at`` is what
    ``get`` honours. ``max_bytes`` bounds the Arrow payload of one entry; the total is
    Redis's business (configure ``maxmemory-policy``), so :attr:`nbytes` is -1.

    An entry that cannot be read (corrupt, or another format) is a miss: it is deleted
    and logged (a warning the first time). Redis errors propagate. Works with
    ``decode_responses`` on or off; the client belongs to the caller and
    :meth:`close` does not close it.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "rnb",
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self.max_bytes = max_bytes
        self.clock = clock  # time.time() seconds; tests replace it
        self._warn = _WarnOnce()

    @property
    def nbytes(self) -> int:
        """Not tracked: always -1 (Redis holds the entries, and other processes add some)."""
        return -1

    def _key(self, tenant: str, key: str) -> str:
        return f"{self._prefix}:{{{tenant}}}:cache:{key}"

    def get(self, tenant: str, key: str,
            valid: Callable[[Mapping[str, int]], bool] | None = None) -> CacheEntry | None:
        import redis as redis_lib
        from redis.client import NEVER_DECODE

        rkey = self._key(tenant, key)
        try:
            # NEVER_DECODE: the Arrow payload is binary even on a decode_responses client.
            client: Any = self._client  # execute_command is untyped
            raw: Any = client.execute_command("HGETALL", rkey, **{NEVER_DECODE: []})
        except redis_lib.ResponseError as exc:  # e.g. WRONGTYPE: not one of our hashes
            self._drop_corrupt(rkey, exc)
            return None
        if not raw:
            return None
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        try:
            meta = self._parse_meta(fields.get("meta"))
        except Exception as exc:  # anything unreadable is a miss, never an error
            self._drop_corrupt(rkey, exc)
            return None
        expires_at = meta["expires_at"]
        # Past expires_at is a miss even before Redis's EXPIRE (whole seconds) fires.
        if expires_at is not None and self.clock() >= expires_at:
            return None
        if valid is not None and not valid(meta["versions"]):
            return None  # stale: not worth decoding (errors of valid() are the caller's)
        try:
            payload = fields.get("arrow")
            if not isinstance(payload, bytes):
                raise _CorruptEntry("no arrow field")
            df = from_arrow_bytes(payload)
        except Exception as exc:  # anything unreadable is a miss, never an error
            self._drop_corrupt(rkey, exc)
            return None
        return CacheEntry(df, meta["versions"], meta["created_at"], expires_at, meta["nbytes"])

    @staticmethod
    def _parse_meta(raw: object) -> dict[str, Any]:
        if not isinstance(raw, (bytes, str)):
            raise _CorruptEntry("no meta field")
        meta = json.loads(raw)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
            raise _CorruptEntry(f"unknown format {raw!r:.100}")
        versions, created, expires, nbytes = (
            meta["versions"], meta["created_at"], meta["expires_at"], meta["nbytes"])
        if not (
            isinstance(versions, dict)
            and all(isinstance(k, str) and type(v) is int for k, v in versions.items())
            and isinstance(created, (int, float))
            and (expires is None or isinstance(expires, (int, float)))
            and type(nbytes) is int
        ):
            raise _CorruptEntry(f"malformed meta {raw!r:.100}")
        return meta

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
        rkey = self._key(tenant, key)
        payload = to_arrow_bytes(df)
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
            "format": FORMAT_VERSION,
            "versions": {str(k): int(v) for k, v in versions.items()},
            "created_at": now,
            "expires_at": _expires_at(now, ttl),
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
        self._client.delete(self._key(tenant, key))

    def clear(self, tenant: str | None = None) -> None:
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
