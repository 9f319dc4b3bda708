"""Redis health as the rest of the data path sees it: one warning per outage, one recovery
message, and the version bumps that failed meanwhile, applied before the cache is trusted.

Without the replay a cached entry from before an outage would look fresh after a write
made during it. With the in-memory backends ``errors`` is empty and nothing ever fails.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reactive_nb.stores.versions import Versions

logger = logging.getLogger("reactive_nb")


def redis_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean "Redis did not answer" (as opposed to a bug)."""
    import redis

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class StoreHealth:
    """Whether the shared stores answer, and the bumps owed to them."""

    def __init__(self, versions: Versions, errors: tuple[type[BaseException], ...] = ()) -> None:
        self.versions = versions
        #: Catch these around store calls; empty for the memory backends.
        self.errors = errors
        # _lock guards _down and _pending; never held while talking to Redis.
        self._lock = threading.Lock()
        self._down = False
        self._pending: dict[str, set[str]] = {}

    @property
    def down(self) -> bool:
        return self._down

    def failed(self, exc: BaseException) -> None:
        """A store call failed: warn once per outage; results are served uncached meanwhile."""
        with self._lock:
            first, self._down = not self._down, True
        if first:
            logger.warning("Redis is unreachable (%s): serving uncached results until it is "
                           "back", exc)

    def bump_failed(self, tenant: str, tables: Iterable[str], exc: BaseException) -> None:
        """Remember a version bump that did not reach Redis; it is applied on recovery."""
        with self._lock:
            self._pending.setdefault(tenant, set()).update(tables)
        self.failed(exc)

    def ready(self) -> bool:
        """May the cache and versions be used? Applies the owed bumps first; False while
        Redis is still unreachable."""
        if not self._down:
            return True
        with self._lock:
            pending, self._pending = self._pending, {}
        try:
            for tenant, tables in pending.items():
                self.versions.bump(tenant, tables)
        except self.errors as exc:
            with self._lock:
                for tenant, tables in pending.items():
                    self._pending.setdefault(tenant, set()).update(tables)
            self.failed(exc)
            return False
        with self._lock:
            recovered, self._down = self._down, False
        if recovered:
            logger.info("Redis is reachable again: caching resumed")
        return True
