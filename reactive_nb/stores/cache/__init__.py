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

The modules: ``base`` (:class:`CacheEntry`, the :class:`Cache` protocol, the size bound
and the Redis entry format), ``memory`` (:class:`MemoryCache` and :func:`entry_cost`),
``arrow`` (the codec of the Redis cache) and ``redis`` (:class:`RedisCache`). Every module
logs to ``reactive_nb.stores.cache``. Nothing here imports pandas, pyarrow or redis until
it is used.
"""

from __future__ import annotations

from reactive_nb.stores.cache.arrow import Unencodable, from_arrow_bytes, to_arrow_bytes
from reactive_nb.stores.cache.base import DEFAULT_MAX_BYTES, Cache, CacheEntry
from reactive_nb.stores.cache.memory import MemoryCache, entry_cost
from reactive_nb.stores.cache.redis import RedisCache

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Cache",
    "CacheEntry",
    "MemoryCache",
    "RedisCache",
    "Unencodable",
    "entry_cost",
    "from_arrow_bytes",
    "to_arrow_bytes",
]
