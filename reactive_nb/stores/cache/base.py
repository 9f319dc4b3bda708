"""What every cache shares: :class:`CacheEntry`, the :class:`Cache` protocol, the size
bound, the Redis entry format versions, and the warn-once logger of both backends."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

# Every module of the package logs under the package's name.
logger = logging.getLogger("reactive_nb.stores.cache")

#: Default size bound: 512 MiB of frames (memory) or of Arrow payload per entry (Redis).
DEFAULT_MAX_BYTES = 512 * 2**20

#: Version of the Redis entry layout; an entry with another version is a miss. Entries
#: that need the codec's extras (JSON-encoded object columns, repeated column names) are
#: written as :data:`EXTENDED_FORMAT`, which older readers take for a foreign format
#: (a miss) instead of serving JSON text in place of the values; the others keep 1.
FORMAT_VERSION = 1
EXTENDED_FORMAT = 2
#: The entry format versions this version reads.
FORMATS = (FORMAT_VERSION, EXTENDED_FORMAT)


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

    #: ``time.time()`` seconds, the clock of ``created_at`` and TTLs (tests inject one).
    clock: Callable[[], float]

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


def expiry(now: float, ttl: float | None) -> float | None:
    """When an entry set at ``now`` with ``ttl`` seconds expires (None: never)."""
    return None if ttl is None else now + ttl


class WarnOnce:
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
