"""What the publishing side of the Redis bus remembers between two sends.

The ids it published recently (their echo from Redis is not delivered again), the
changes held while Redis was unreachable (merged per tenant and origin, sent when it is
back) and the back-off before a publisher tries Redis again.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from reactive_nb.events import Change

__all__ = ["FIRST_DELAY", "MAX_DELAY", "Outbox"]

FIRST_DELAY = 0.05  # seconds before the first reconnect attempt; doubles up to MAX_DELAY
MAX_DELAY = 5.0
_SENT_IDS = 4096  # ids of changes this bus published recently, to drop their echo


class Outbox:
    """Sent ids, held changes and the publishers' back-off of one bus.

    Not locked itself: the bus calls it with its own lock held.
    """

    def __init__(self) -> None:
        self.sent: OrderedDict[str, None] = OrderedDict()  # ids we published, to drop echoes
        self.pending: dict[tuple[str, str], Change] = {}  # not yet sent, per (tenant, origin)
        self.retry_at: float | None = None  # publish holds changes in pending until then
        self.retry_delay = FIRST_DELAY

    def record(self, change: Change) -> None:
        """Remember that this bus published ``change``, forgetting the oldest ids."""
        self.sent[change.id] = None
        while len(self.sent) > _SENT_IDS:
            self.sent.popitem(last=False)

    def backing_off(self) -> bool:
        """Whether Redis was down a moment ago, so a publisher should not wait on it yet."""
        return self.retry_at is not None and time.monotonic() < self.retry_at

    def hold(self, change: Change) -> None:
        """Keep a change for later, merged with the others of its tenant and origin."""
        key = (change.tenant, change.origin)
        held = self.pending.get(key)
        if held is not None:
            change = Change(change.tenant, held.tables | change.tables, change.origin)
            self.sent[change.id] = None
        self.pending[key] = change

    def take(self) -> list[Change]:
        """The held changes, no longer held."""
        batch = list(self.pending.values())
        self.pending.clear()
        return batch

    def failed(self) -> None:
        """A send found Redis down: back off before the next one (doubling, capped)."""
        self.retry_at = time.monotonic() + self.retry_delay
        self.retry_delay = min(self.retry_delay * 2, MAX_DELAY)

    def succeeded(self) -> None:
        """A send reached Redis: no back-off any more."""
        self.retry_at = None
        self.retry_delay = FIRST_DELAY

    def due(self) -> bool:
        """Whether held changes wait for no back-off delay any more."""
        return bool(self.pending) and (
            self.retry_at is None or time.monotonic() >= self.retry_at)
