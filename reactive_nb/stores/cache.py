"""The result cache: DataFrames by (tenant, key), with the versions they were computed at.

An entry is a frame plus the versions of its watched tables read before the handler
ran; the caller compares them with the current versions to decide freshness (see
:mod:`reactive_nb.stores.versions`). The cache itself only knows about size and TTL.

:class:`MemoryCache` is an LRU bounded by bytes, for one process: the bound is on the
memory entries really take (the frame's data *and* what keeping a frame costs: its
index, blocks and arrays, the key and the versions), so a million tiny or empty frames
cannot grow the process past it. A hit costs O(1) in the number of rows: it hands out a
lazy copy-on-write copy of the stored frame.
:class:`RedisCache` shares entries between processes as Arrow IPC streams; a frame that
would not read back identical (objects Arrow does not know, such as ``inet`` or range
values) is served uncached rather than raising or coming back changed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import redis

    from reactive_nb.stores.health import Breaker

__all__ = ["DEFAULT_MAX_BYTES", "Cache", "CacheEntry", "MemoryCache", "RedisCache"]

logger = logging.getLogger(__name__)

#: Default size bound: 512 MiB of frames (memory) or of Arrow payload per entry (Redis).
DEFAULT_MAX_BYTES = 512 * 2**20

#: Version of the Redis entry layout; an entry with another version is a miss. Entries
#: that need the codec's extras (JSON-encoded object columns, repeated column names) are
#: written as :data:`EXTENDED_FORMAT`, which older readers take for a foreign format
#: (a miss) instead of serving JSON text in place of the values; the others keep 1.
FORMAT_VERSION = 1
EXTENDED_FORMAT = 2
_FORMATS = (FORMAT_VERSION, EXTENDED_FORMAT)


@dataclass(frozen=True, eq=False)
class CacheEntry:
    """A cached frame and what it was computed from.

    ``versions`` are the watched-table versions read before the run; ``created_at`` and
    ``expires_at`` are ``time.time()`` seconds (``expires_at`` None: no TTL). ``nbytes``
    is what the entry counts against ``max_bytes``: the memory it takes, data and overhead
    (memory cache, see :func:`entry_cost`), or its Arrow payload size (Redis).
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
        """Store ``df``; False when it is not kept: larger than max_bytes (one warning per
        cache), or a frame the backend cannot give back identical (a debug line)."""
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


# What keeping one frame costs beyond the data ``_frame_nbytes`` counts, in bytes: the
# resident memory each entry added, over 30,000 entries of each shape, with pandas 3.1,
# numpy 2.4 and pyarrow 26 on x86-64 Linux, rounded up (benchmarks/bench_faults.py
# reports the resident memory of full caches against their bound).
#: The entry, its LRU slot and key tuple, the DataFrame, its block manager, a RangeIndex.
ENTRY_OVERHEAD = 2_600
#: The column labels (an Index and its array), per level, when there is a column.
COLUMNS_OVERHEAD = 1_400
#: Each column label.
COLUMN_OVERHEAD = 24
#: A numpy-backed block: the Block, its placement, an array view, copy-on-write references.
BLOCK_OVERHEAD = 1_100
#: An extension-array block (Arrow-backed strings, nullable integers, time zones...): its
#: array objects and the allocator's rounding of small Arrow buffers.
EXTENSION_BLOCK_OVERHEAD = 2_200
#: An index level that is not a RangeIndex: its Index object and lookup engine.
INDEX_OVERHEAD = 1_100
#: One recorded version: a dict slot, an int and its name.
VERSION_OVERHEAD = 120
#: Values sampled per object column to estimate what containers (lists, dicts) hold.
_SAMPLE = 64
#: Objects visited at most per sampled value.
_SAMPLE_DEPTH = 10_000


def entry_cost(key: str, df: pd.DataFrame, versions: Mapping[str, int]) -> int:
    """The memory an entry of the memory cache takes, in bytes: the frame's deep memory
    usage plus what keeping it costs (index, blocks and arrays, labels, the key, the
    versions) and what containers in object columns hold (estimated from a sample).

    Counting the data alone let 100,000 one-row frames count 15 MB against the bound
    while they took 671 MiB; empty frames counted almost nothing.
    """
    import numpy as np
    import pandas as pd

    cost = _frame_nbytes(df) + ENTRY_OVERHEAD + len(key)
    cost += sum(VERSION_OVERHEAD + len(name) for name in versions)
    if df.shape[1]:
        cost += COLUMNS_OVERHEAD * df.columns.nlevels + COLUMN_OVERHEAD * df.shape[1]
    if not isinstance(df.index, pd.RangeIndex):
        cost += INDEX_OVERHEAD * df.index.nlevels
    try:
        blocks = df._mgr.blocks
    except AttributeError:  # not the block manager this was measured with: be generous
        return cost + EXTENSION_BLOCK_OVERHEAD * df.shape[1]
    for block in blocks:
        values = block.values
        if isinstance(values, np.ndarray):
            cost += BLOCK_OVERHEAD
            if values.dtype == object:
                cost += _contents_bytes(values.ravel())
        else:
            cost += EXTENSION_BLOCK_OVERHEAD
    return cost


def _contents_bytes(values: Any) -> int:
    """What the containers among ``values`` (an object array) hold, beyond the containers
    themselves (which ``_frame_nbytes`` counts): 0 for flat objects (str, Decimal, date),
    else estimated from up to ``_SAMPLE`` evenly spread values (jsonb, arrays)."""
    from pandas.api.types import infer_dtype

    if len(values) == 0 or infer_dtype(values, skipna=True) not in (
            "mixed", "mixed-integer", "unknown-array"):
        return 0
    sample = values[::max(1, len(values) // _SAMPLE)]
    held = 0
    for value in sample:
        stack, visited = [value], 0
        while stack and visited < _SAMPLE_DEPTH:
            item = stack.pop()
            visited += 1
            if isinstance(item, dict):
                children: list[Any] = [*item.keys(), *item.values()]
            elif isinstance(item, list | tuple | set | frozenset):
                children = list(item)
            else:
                continue
            held += sum(sys.getsizeof(child) for child in children)
            stack.extend(children)
    return held * len(values) // len(sample)


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
    """An LRU of frames bounded by the memory its entries take (:func:`entry_cost`), with
    TTLs.

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
        # Guards _entries (in LRU order, oldest first), _nbytes (their total size), _freed.
        # Held only for dict operations and O(columns) lazy copies, never while measuring
        # a frame (O(rows) for object columns) or logging.
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], CacheEntry] = OrderedDict()
        self._nbytes = 0
        self._freed = 0  # bytes of entries dropped since memory was last given back

    @property
    def nbytes(self) -> int:
        """Memory the stored entries take (data and overhead, see :func:`entry_cost`)."""
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
        nbytes = entry_cost(key, df, versions)
        if nbytes > self.max_bytes:
            with self._lock:
                # The new result supersedes the old one even when it cannot be kept.
                self._remove((tenant, key))
            self._warn(
                "too-large",
                "not caching %s:%s: the entry takes %d bytes, more than max_bytes=%d",
                tenant, key, nbytes, self.max_bytes,
            )
            return False
        now = self.clock()
        entry = CacheEntry(_lazy_copy(df), versions, now, _expires_at(now, ttl), nbytes)
        dropped: list[CacheEntry] = []
        with self._lock:
            self._remove((tenant, key))
            self._entries[(tenant, key)] = entry
            self._nbytes += nbytes
            while self._nbytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._nbytes -= evicted.nbytes
                self._freed += evicted.nbytes
                dropped.append(evicted)
        del dropped  # the frames go now (unless a caller still holds a hit), then:
        self._give_back()
        return True

    def delete(self, tenant: str, key: str) -> None:
        with self._lock:
            self._remove((tenant, key))

    def clear(self, tenant: str | None = None) -> None:
        with self._lock:
            if tenant is None:
                self._freed += self._nbytes
                self._entries.clear()
                self._nbytes = 0
            else:
                for k in [k for k in self._entries if k[0] == tenant]:
                    self._remove(k)
        self._give_back()

    def close(self) -> None:
        """Drop every entry."""
        self.clear()

    def _remove(self, k: tuple[str, str]) -> None:
        """Drop one entry; the caller holds the lock."""
        entry = self._entries.pop(k, None)
        if entry is not None:
            self._nbytes -= entry.nbytes
            self._freed += entry.nbytes

    def _give_back(self) -> None:
        """Once entries of a sixteenth of the bound were dropped, ask Arrow's allocator to
        return the pages their buffers freed (0.1-0.5 ms). It keeps them otherwise:
        evicting 100k-row frames with string columns left the process 1.6x the bound."""
        with self._lock:
            if self._freed < self.max_bytes // 16:
                return
            self._freed = 0
        pyarrow = sys.modules.get("pyarrow")  # frames without Arrow buffers: nothing to do
        if pyarrow is not None:
            with contextlib.suppress(AttributeError):
                pyarrow.default_memory_pool().release_unused()


# --------------------------------------------------------------------------- Redis


class Unencodable(ValueError):
    """A frame the Redis cache cannot store so that it reads back identical."""


#: Schema metadata key of what the codec adds to pandas' own metadata (a JSON object):
#: ``json``, positions of object columns stored as one JSON text per value; ``names``,
#: ``names_dtype`` and ``names_name``, the column labels when some repeat.
_CODEC_KEY = b"reactive_nb"
#: What pandas infers (skipping nulls) for an object column that Arrow stores as strings.
_STRINGS = ("string", "empty")
_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_DECODE = json.JSONDecoder().decode


def to_arrow_bytes(df: pd.DataFrame) -> bytes:
    """The frame, index included, as an Arrow IPC stream that :func:`from_arrow_bytes`
    turns back into an identical frame; :class:`Unencodable` when there is none."""
    return _ipc(_to_table(df)[0])


def _ipc(table: pa.Table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def _to_table(df: pd.DataFrame) -> tuple[pa.Table, bool]:
    """The Arrow table of a frame, and whether it needs the codec's extras to read back.

    Object columns are where Arrow changes values: a list comes back as a numpy array, a
    dict gains the keys of the other rows, an int next to a None becomes a float, and
    ``inet`` or range values, mixed jsonb or a str next to an int do not convert at all.
    So an object column that is not plain strings is stored as JSON text per value when
    that reads back equal (jsonb, arrays, mixed scalars), natively when Arrow keeps its
    objects (bytes, dates, times, decimals, UUIDs), and otherwise the frame is refused.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from pandas.api.types import infer_dtype

    extra: dict[str, Any] = {}
    frame = df
    if not df.columns.is_unique:
        if df.columns.nlevels != 1 or not all(isinstance(c, str) for c in df.columns):
            raise Unencodable("repeated column labels that are not plain names")
        if not (df.columns.name is None or isinstance(df.columns.name, str)):
            raise Unencodable("repeated column labels under a label that is not a name")
        extra.update(names=list(df.columns), names_dtype=str(df.columns.dtype),
                     names_name=df.columns.name)
        frame = df.set_axis([f"{i}" for i in range(df.shape[1])], axis=1)
    for level in range(frame.index.nlevels):
        values = frame.index.get_level_values(level)
        if values.dtype == object and infer_dtype(values, skipna=True) not in _STRINGS:
            raise Unencodable(f"index level {level} holds objects that are not strings")
    texts: dict[int, list[str]] = {}
    for i, dtype in enumerate(frame.dtypes):
        if dtype != np.dtype(object):
            continue
        column = frame.iloc[:, i]
        kind = infer_dtype(column, skipna=True)
        if kind == "string" or (kind == "empty" and all(v is None for v in column)):
            continue
        encoded = _json_texts(column)
        if encoded is not None:
            texts[i] = encoded
        else:
            _check_native(column)
    if texts:
        frame = frame.copy(deep=False)
        for i, encoded_texts in texts.items():
            frame.isetitem(i, pd.Series(encoded_texts, index=frame.index, dtype=object,
                                        copy=False))
        extra["json"] = sorted(texts)
    try:
        # None: a RangeIndex is kept as metadata only, any other index as columns.
        table = pa.Table.from_pandas(frame, preserve_index=None)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise Unencodable(f"{type(exc).__name__}: {exc}") from exc
    if extra:
        metadata = dict(table.schema.metadata or {})
        metadata[_CODEC_KEY] = json.dumps(extra).encode()
        table = table.replace_schema_metadata(metadata)
    return table, bool(extra)


def _json_texts(column: pd.Series) -> list[str] | None:
    """One JSON text per value, or None unless every value reads back equal (a tuple
    would come back a list, an int key a str, NaN not at all)."""
    values = column.tolist()
    try:
        texts = [_ENCODE(v) for v in values]
    except (TypeError, ValueError, RecursionError):
        return None
    return texts if [_DECODE(t) for t in texts] == values else None


def _check_native(column: pd.Series) -> None:
    """Raise :class:`Unencodable` unless Arrow gives back the objects of this column."""
    import pyarrow as pa

    try:
        kind = pa.array(column, from_pandas=True).type
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise Unencodable(f"column {column.name!r}: {type(exc).__name__}: {exc}") from exc
    uuid_type = getattr(pa, "UuidType", None)
    if (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_date32(kind)
            or pa.types.is_decimal(kind)
            or (uuid_type is not None and isinstance(kind, uuid_type))):
        return
    if pa.types.is_time(kind) and all(v is None or v.tzinfo is None for v in column):
        return  # Arrow times have no time zone
    raise Unencodable(f"column {column.name!r}: its objects would come back as {kind}")


def from_arrow_bytes(data: bytes) -> pd.DataFrame:
    """The inverse of :func:`to_arrow_bytes`."""
    import pandas as pd
    import pyarrow as pa

    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    raw = (table.schema.metadata or {}).get(_CODEC_KEY)
    extra: dict[str, Any] = json.loads(raw) if raw else {}
    json_columns = {int(i) for i in extra.get("json", [])}
    meta = table.schema.pandas_metadata or {}
    index_fields = {c for c in meta.get("index_columns", []) if isinstance(c, str)}
    for field in table.schema:
        nested = pa.types.is_nested(field.type) or (
            pa.types.is_dictionary(field.type) and pa.types.is_nested(field.type.value_type))
        if nested and field.name not in index_fields:
            # Never written by this codec (it would not read back as the same objects):
            # an entry of an older version.
            raise _CorruptEntry(f"column {field.name!r} is {field.type}")
    df: pd.DataFrame = table.to_pandas()
    _restore_object_strings(table, df, skip=json_columns)
    for i in sorted(json_columns):
        decoded = [_DECODE(t) for t in df.iloc[:, i].tolist()]
        df.isetitem(i, pd.Series(decoded, index=df.index, dtype=object, copy=False))
    if "names" in extra:
        df.columns = pd.Index(extra["names"], dtype=extra["names_dtype"],
                              name=extra["names_name"])
    return df


def _restore_object_strings(table: pa.Table, df: pd.DataFrame,
                            skip: Collection[int] = ()) -> None:
    """Give back ``object`` dtype to string columns and index levels that had it.

    With pandas' default string dtype (pandas 3, or ``future.infer_string``), pyarrow
    turns every Arrow string column into ``str``, even when the pandas metadata says
    the column was ``object``. Rebuild those from Arrow (nulls become None); columns at
    the positions in ``skip`` are left alone.
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
            if i not in skip and was_object_str(col) and df.dtypes.iloc[i] != np.dtype(object):
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
        self._warn = _WarnOnce()

    def _guard(self) -> None:
        if self.breaker is not None:
            self.breaker.check()

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

        self._guard()
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
        if not isinstance(meta, dict) or meta.get("format") not in _FORMATS:
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
        self._guard()
        rkey = self._key(tenant, key)
        try:
            table, extended = _to_table(df)
            payload = _ipc(table)
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
        self._guard()
        self._client.delete(self._key(tenant, key))

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
