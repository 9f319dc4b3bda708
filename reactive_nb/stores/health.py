"""Redis health as the rest of the data path sees it: one warning per outage, one recovery
message, and the version bumps that failed meanwhile, applied before the cache is trusted.

Without the replay a cached entry from before an outage would look fresh after a write
made during it, to every process sharing the cache. Readers replay in ``ready()``; a
process that only writes never calls it, so the first failed bump also starts a thread
(``reactive_nb-store-replay``) that retries with back-off until Redis answers. With the
in-memory backends ``errors`` is empty and nothing ever fails.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from reactive_nb.events import ALL_TABLES, DEFAULT_TENANT
from reactive_nb.threads import Background

if TYPE_CHECKING:
    from reactive_nb.stores.versions import Versions

logger = logging.getLogger("reactive_nb")

#: Seconds the replay thread waits before its first attempt; doubled after each failure
#: up to :data:`REPLAY_MAX_DELAY`.
REPLAY_FIRST_DELAY = 0.05
REPLAY_MAX_DELAY = 2.0


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
        # _lock guards every field below; it is held for a few assignments, never while
        # talking to Redis, so it is uncontended. Invariant: _pending non-empty => _down.
        self._lock = threading.Lock()
        self._down = False
        self._pending: dict[str, set[str]] = {}
        # True while one thread applies bumps it took out of _pending: they are still
        # owed, so no other thread may declare the store usable until it is done.
        self._replaying = False
        self._retry: Background | None = None
        self._closed = False

    @property
    def down(self) -> bool:
        return self._down

    def failed(self, exc: BaseException) -> None:
        """A store call failed: warn once per outage; results are served uncached meanwhile."""
        with self._lock:
            first, self._down = not self._down, True
        if first:
            self._warn(exc)

    def bump_failed(self, tenant: str, tables: Iterable[str], exc: BaseException) -> None:
        """Remember a version bump that did not reach Redis; it is applied on recovery, by
        the next reader or by the replay thread this starts, whichever comes first."""
        with self._lock:
            self._pending.setdefault(tenant, set()).update(tables)
            first, self._down = not self._down, True
            retry = None
            if self._retry is None and not self._closed:
                retry = self._retry = Background("store-replay", self._retry_loop)
        if first:
            self._warn(exc)
        if retry is not None:
            retry.start()

    def ready(self) -> bool:
        """May the cache and versions be used? Applies the owed bumps first (or checks that
        Redis answers); False while Redis is unreachable or another thread is replaying."""
        if not self._down:
            return True
        return self._replay(by_retry=False)

    def close(self) -> None:
        """Stop the replay thread, try the owed bumps once more, and say which are lost."""
        with self._lock:
            self._closed = True
            retry, self._retry = self._retry, None
        if retry is not None:
            retry.stop()
        if self._down and not self._replay(by_retry=False):
            with self._lock:
                owed = {tenant: sorted(tables) for tenant, tables in self._pending.items()}
            if owed:
                logger.warning("closing while Redis is unreachable: version bumps of %s were "
                               "not applied; other processes may serve results cached before "
                               "those writes until the tables change again", owed)

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _warn(exc: BaseException) -> None:
        logger.warning("Redis is unreachable (%s): serving uncached results until it is "
                       "back", exc)

    def _retry_loop(self, stopping: threading.Event) -> None:
        """Replay until Redis answers, waiting 50 ms, then twice as long each time (2 s at
        most): a process that only writes must not leave its bumps owed."""
        delay = REPLAY_FIRST_DELAY
        while not stopping.wait(delay):
            if self._replay(by_retry=True):
                return
            delay = min(delay * 2, REPLAY_MAX_DELAY)

    def _replay(self, by_retry: bool) -> bool:
        """Apply the owed bumps (or, with none owed, check that Redis answers); True when
        the store is usable again. One thread at a time; bumps it could not apply go back
        to the owed set (applying one twice is harmless, losing one is not)."""
        while True:
            with self._lock:
                if not self._down:
                    if by_retry:
                        self._retry = None  # decided with the state: a new outage starts anew
                    return True
                if self._replaying:
                    return False
                pending, self._pending = self._pending, {}
                self._replaying = True
            try:
                if pending:
                    for tenant in list(pending):
                        self.versions.bump(tenant, pending[tenant])
                        del pending[tenant]
                else:  # down after a failed read: does Redis answer now?
                    self.versions.get(DEFAULT_TENANT, [ALL_TABLES])
            except BaseException as exc:
                with self._lock:
                    for tenant, tables in pending.items():
                        self._pending.setdefault(tenant, set()).update(tables)
                    self._replaying = False
                if isinstance(exc, self.errors):
                    return False
                raise
            with self._lock:
                self._replaying = False
                if self._pending:  # more bumps failed meanwhile: apply them first
                    continue
                self._down = False
                if by_retry:
                    self._retry = None
            logger.info("Redis is reachable again: caching resumed")
            return True
