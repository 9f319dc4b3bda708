"""Redis health as the rest of the data path sees it: a circuit breaker, one warning per
outage, one recovery message, and the version bumps that failed meanwhile, applied before
the cache is trusted again.

The breaker (:class:`Breaker`) is *closed* while Redis answers. The first failure or
timeout opens it: from then on the Redis stores refuse at once (:class:`StoreUnavailable`)
instead of waiting on a hung server, ``ready()`` is False, results are served uncached and
version bumps go straight to the owed set. A background thread (``reactive_nb-store-replay``)
*half-opens* it after a back-off: it alone may talk to Redis, applies the owed bumps (or,
with none owed, reads a counter) and closes the breaker on success; on failure it waits
twice as long (up to :data:`REPLAY_MAX_DELAY`) and tries again. Without the replay a
cached entry from before an outage would look fresh after a write made during it, to
every process sharing the cache. With the in-memory backends ``errors`` is empty and
nothing ever fails.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

from reactive_nb.events import ALL_TABLES, DEFAULT_TENANT
from reactive_nb.threads import Background

if TYPE_CHECKING:
    from reactive_nb.stores.versions import Versions

logger = logging.getLogger("reactive_nb")

#: Seconds before the first probe of an outage; doubled after each failed probe up to
#: :data:`REPLAY_MAX_DELAY`, so a long outage costs one probe every 2 s.
REPLAY_FIRST_DELAY = 0.05
REPLAY_MAX_DELAY = 2.0

#: Socket timeouts (seconds) of the Redis client ``connect(redis=URL)`` makes. A hung
#: server (stopped, or a black-holed port) costs one call this long, then the breaker
#: opens; Redis answers a healthy request in well under a millisecond.
REDIS_CONNECT_TIMEOUT = 0.25
REDIS_READ_TIMEOUT = 0.25

State = Literal["closed", "open", "half-open"]


class StoreUnavailable(Exception):
    """A store call refused without talking to Redis: the breaker is open."""


def redis_errors() -> tuple[type[BaseException], ...]:
    """The errors that mean "Redis did not answer" (as opposed to a bug). On a Redis
    Cluster that includes a slot that cannot serve now: no master (CLUSTERDOWN, during a
    failover), and a multi-key command while its slot migrates with keys on both sides
    (TRYAGAIN, or redirections that did not settle: ``ClusterError``) once the stores'
    own short retry (:mod:`reactive_nb.stores.slots`) has not seen the slot settle."""
    import redis

    errors = redis.exceptions
    return (errors.ConnectionError, errors.TimeoutError, errors.ClusterDownError,
            errors.TryAgainError, errors.ClusterError, StoreUnavailable)


class Breaker:
    """closed -> open (a failure) -> half-open (one probe, after a back-off) -> closed | open.

    The Redis stores call :meth:`check` before every command. ``clock`` (monotonic seconds)
    times the back-off; tests inject their own.
    """

    def __init__(self, first_delay: float = REPLAY_FIRST_DELAY,
                 max_delay: float = REPLAY_MAX_DELAY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._clock = clock
        # Guards every field below; held for a few assignments, never while talking to
        # Redis, so it is uncontended.
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._delay = first_delay
        self._probe_at = 0.0
        self._prober: int | None = None  # thread ident allowed through while half-open
        #: Store calls refused because the breaker was open (Redis not contacted).
        self.skipped = 0

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    @property
    def delay(self) -> float:
        """The current back-off: seconds between the last failure and the next probe."""
        return self._delay

    def allows(self) -> bool:
        """May this thread use Redis now? (closed, or it is the probing thread.) A refusal
        counts in :attr:`skipped`."""
        if self._state == "closed":  # one attribute read: no lock on the hot path
            return True
        with self._lock:
            if self.closed or self._prober == threading.get_ident():
                return True
            self.skipped += 1
            return False

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` unless :meth:`allows`."""
        if not self.allows():
            raise StoreUnavailable("Redis is unreachable: the circuit breaker is open")

    def trip(self) -> bool:
        """A call to Redis failed. Opens a closed breaker (True: a new outage); a failed
        probe re-opens it with twice the back-off; otherwise (a call that was in flight
        when it opened) nothing changes."""
        with self._lock:
            now = self._clock()
            if self._state == "closed":
                self._state, self._delay = "open", self.first_delay
                self._probe_at = now + self._delay
                return True
            if self._state == "half-open" and self._prober == threading.get_ident():
                self._state, self._prober = "open", None
                self._delay = min(self._delay * 2, self.max_delay)
                self._probe_at = now + self._delay
            return False

    def due_in(self) -> float:
        """Seconds until a probe is due (0: now; inf: closed, nothing to probe)."""
        with self._lock:
            if self._state == "closed":
                return math.inf
            if self._state == "half-open":  # another thread probes: look again later
                return self._delay
            return max(0.0, self._probe_at - self._clock())

    def probe(self, force: bool = False) -> bool:
        """Half-open: True when this thread may now probe (open, and due or ``force``).
        It then alone talks to Redis until :meth:`reset` or :meth:`trip`."""
        with self._lock:
            if self._state != "open" or (not force and self._clock() < self._probe_at):
                return False
            self._state, self._prober = "half-open", threading.get_ident()
            return True

    def reset(self) -> None:
        """The probe succeeded: close."""
        with self._lock:
            self._state, self._prober, self._delay = "closed", None, self.first_delay


class StoreHealth:
    """Whether the shared stores answer (a :class:`Breaker`), and the bumps owed to them.

    ``breaker``: the one the Redis stores check; by default the one ``versions`` was made
    with (``RedisVersions(breaker=...)``), else a new one.
    """

    def __init__(self, versions: Versions, errors: tuple[type[BaseException], ...] = (),
                 breaker: Breaker | None = None) -> None:
        self.versions = versions
        #: Catch these around store calls; empty for the memory backends.
        self.errors = errors
        found = getattr(versions, "breaker", None)
        self.breaker: Breaker = breaker or (found if isinstance(found, Breaker) else Breaker())
        # _lock guards the fields below and orders owed bumps against closing the breaker.
        # Invariant: _pending non-empty => the breaker is not closed. Held for a few
        # assignments, never while talking to Redis, so it is uncontended.
        self._lock = threading.Lock()
        self._pending: dict[str, set[str]] = {}
        self._retry: Background | None = None  # the probing thread of this outage
        self._closed = False
        self._errors_logged = 0

    @property
    def down(self) -> bool:
        return not self.breaker.closed

    def failed(self, exc: BaseException) -> None:
        """A store call failed: open the breaker (one warning per outage); results are
        served uncached until a probe finds Redis answering again."""
        if isinstance(exc, StoreUnavailable):
            return  # refused by the breaker: nothing new was learnt
        with self._lock:
            first = self.breaker.trip()
            retry = self._start_probing()
        if first:
            self._warn(exc)
        if retry is not None:
            retry.start()

    def bump_failed(self, tenant: str, tables: Iterable[str], exc: BaseException) -> None:
        """Remember a version bump that did not reach Redis; the probing thread applies it
        before the cache is trusted again."""
        tables = set(tables)
        while True:
            refused = isinstance(exc, StoreUnavailable)
            if refused and self.breaker.closed:
                # Refused while a probe ran, which has closed the breaker since: Redis
                # answers, so bump now rather than open it again.
                try:
                    self.versions.bump(tenant, tables)
                    return
                except self.errors as again:
                    exc = again
                    continue
            with self._lock:
                if refused and self.breaker.closed:
                    continue  # closed meanwhile: bump now (above)
                self._pending.setdefault(tenant, set()).update(tables)
                first = not refused and self.breaker.trip()
                retry = self._start_probing()
            break
        if first:
            self._warn(exc)
        if retry is not None:
            retry.start()

    def ready(self) -> bool:
        """May the cache and versions be used? False at once while the breaker is open:
        never waits on Redis (the probing thread does)."""
        return self.breaker.allows()

    def close(self) -> None:
        """Stop the probing thread, try the owed bumps once more, and say which are lost."""
        with self._lock:
            self._closed = True
            retry, self._retry = self._retry, None
        if retry is not None:
            retry.stop()
        if self.down and not (self.breaker.probe(force=True) and self._replay()):
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
                       "back", str(exc) or type(exc).__name__)

    def _start_probing(self) -> Background | None:
        """The probing thread to start, if the breaker is open and none runs (lock held)."""
        if self._retry is not None or self._closed or self.breaker.closed:
            return None
        self._retry = Background("store-replay", self._probe_loop)
        return self._retry

    def _probe_loop(self, stopping: threading.Event) -> None:
        """Half-open the breaker after each back-off and probe, until a probe succeeds."""
        while not stopping.wait(self.breaker.due_in()):
            if self.breaker.probe() and self._replay():
                return
            with self._lock:
                if self.breaker.closed:  # cannot happen without a probe; never spin
                    self._retry = None
                    return

    def _replay(self) -> bool:
        """The probe (the caller holds the half-open breaker): apply the owed bumps, or with
        none owed read a counter; True when the breaker closed. Bumps it could not apply go
        back to the owed set (applying one twice is harmless, losing one is not)."""
        while True:
            with self._lock:
                pending, self._pending = self._pending, {}
            try:
                if pending:
                    for tenant in list(pending):
                        self.versions.bump(tenant, pending[tenant])
                        del pending[tenant]
                else:
                    self.versions.get(DEFAULT_TENANT, [ALL_TABLES])
            except Exception as exc:
                with self._lock:
                    for tenant, tables in pending.items():
                        self._pending.setdefault(tenant, set()).update(tables)
                    self.breaker.trip()
                if not isinstance(exc, self.errors):
                    # Redis answered with an error (out of memory...): the bumps cannot be
                    # applied, so the cache stays off; said once, then retried quietly.
                    self._errors_logged += 1
                    logger.log(logging.WARNING if self._errors_logged == 1 else logging.DEBUG,
                               "could not apply the owed version bumps: %r; retrying", exc)
                return False
            with self._lock:
                if self._pending:  # more bumps failed meanwhile: apply them first
                    continue
                self.breaker.reset()
                self._retry = None  # decided with the state: a new outage starts anew
            logger.info("Redis is reachable again: caching resumed")
            return True
