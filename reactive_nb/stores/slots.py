"""A Redis Cluster slot on the move: the errors that say so, and a short retry for them.

While a slot migrates (``CLUSTER SETSLOT ... MIGRATING/IMPORTING`` then ``MIGRATE``, what
``redis-cli --cluster reshard`` does), a command naming several keys of that slot is
refused with ``TRYAGAIN`` when some of its keys have moved and some have not (a key that
does not exist yet counts as not moved: a lease, a once key). redis-py retries it 16
times and then raises ``ClusterError("TTL exhausted.")``. Measured on the local cluster
(redis-server 7.0, redis-py 8.1): a version bump with a once key took 0.1 s to fail that
way, a lease claim 0.4 s. Nothing is wrong with Redis, and the refused command was never
run (a redirection is answered before a command runs), so running it again is safe.

:class:`SlotRetry` runs such a call again a few times after a tiny back-off, so a slot
that finishes moving meanwhile costs a few milliseconds instead of an outage (the stores'
circuit breaker, uncached results for every tenant, an "unreachable" warning). A slot that
stays half-moved longer raises the last error, which :func:`reactive_nb.stores.health.
redis_errors` still counts as Redis not answering: the bump is then owed, never lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["SLOT_ATTEMPTS", "SLOT_FIRST_DELAY", "SlotRetry", "slot_moving"]

T = TypeVar("T")

#: Calls made in all (the first and the retries) while a slot is on the move.
SLOT_ATTEMPTS = 4
#: Seconds before the first retry; doubled before each next one (0.01, 0.02, 0.04).
SLOT_FIRST_DELAY = 0.01


def slot_moving(exc: BaseException) -> bool:
    """Whether ``exc`` says a cluster slot is being moved (TRYAGAIN, or redirections
    that did not settle within redis-py's own retries), as opposed to Redis not answering
    (connections, CLUSTERDOWN during a failover) or a bug."""
    from redis.exceptions import AskError, ClusterDownError, ClusterError, TryAgainError

    if isinstance(exc, (TryAgainError, AskError)):  # MovedError is an AskError
        return True
    return (isinstance(exc, ClusterError) and not isinstance(exc, ClusterDownError)
            and "TTL exhausted" in str(exc))


class SlotRetry:
    """Run a Redis call, and run it again while it fails because its slot is moving.

    ``attempts`` calls in all, ``first_delay`` seconds before the first retry, doubled
    after each; ``sleep`` waits (tests inject their own, to act between two attempts).
    """

    def __init__(self, attempts: int = SLOT_ATTEMPTS, first_delay: float = SLOT_FIRST_DELAY,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {attempts}")
        self.attempts = attempts
        self.first_delay = first_delay
        self._sleep = sleep

    def __call__(self, call: Callable[[], T]) -> T:
        delay = self.first_delay
        for _ in range(self.attempts - 1):
            try:
                return call()
            except Exception as exc:
                if not slot_moving(exc):
                    raise
            self._sleep(delay)
            delay *= 2
        return call()
