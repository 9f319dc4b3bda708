"""The in-memory cache: an LRU of frames bounded by the memory its entries take, and
how that memory is measured (:func:`entry_cost`)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from reactive_nb.stores.cache.base import DEFAULT_MAX_BYTES, CacheEntry, WarnOnce, expiry

if TYPE_CHECKING:
    import pandas as pd


def frame_nbytes(df: pd.DataFrame) -> int:
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


# What keeping one frame costs beyond the data ``frame_nbytes`` counts, in bytes: the
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

    cost = frame_nbytes(df) + ENTRY_OVERHEAD + len(key)
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
    themselves (which ``frame_nbytes`` counts): 0 for flat objects (str, Decimal, date),
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


def copy_on_write() -> bool:
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
    copied: pd.DataFrame = df.copy(deep=not copy_on_write())
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
        self._warn = WarnOnce()
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
        # the constructor: dataclasses.replace costs several µs, on every hit
        return CacheEntry(_lazy_copy(entry.df), entry.versions, entry.created_at,
                          entry.expires_at, entry.nbytes)

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
        entry = CacheEntry(_lazy_copy(df), versions, now, expiry(now, ttl), nbytes)
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
