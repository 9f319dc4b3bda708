"""The run queue: which stale group runs next.

Ready groups are ranked by explicit ``db.priorities``, then visible before hidden, then
high > normal > low, then how long they have been stale; delayed groups (``min_interval``,
back-off) wait in a heap by due time and join the ready ones when due; fresh groups of a
function with a TTL wait in a third heap for their frame to expire. Not thread-safe: the
scheduler's lock guards every call.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from typing import Any

from reactive_nb.live.functions import PRIORITIES
from reactive_nb.live.groups import DELAYED, QUEUED, Group


class RunQueue:
    """Ready groups by rank and delayed groups by due time (entries of groups whose state
    moved on are skipped when popped, so nothing is ever removed from the middle)."""

    def __init__(self) -> None:
        self._ready: list[tuple[tuple[Any, ...], int, Group]] = []
        self._delayed: list[tuple[float, int, Group]] = []
        self._expiring: list[tuple[float, int, Group]] = []
        self._seq = itertools.count()
        self._explicit: dict[str, int] = {}

    def queue(self, group: Group) -> None:
        group.state = QUEUED
        heapq.heappush(self._ready, (self._rank(group), next(self._seq), group))

    def delay(self, group: Group, until: float) -> None:
        group.state = DELAYED
        heapq.heappush(self._delayed, (until, next(self._seq), group))

    def pop(self, now: float) -> Group | None:
        """The best-ranked queued group, promoting delayed ones due by ``now``."""
        while self._delayed and self._delayed[0][0] <= now:
            _, _, group = heapq.heappop(self._delayed)
            if group.state == DELAYED:
                self.queue(group)
        while self._ready:
            _, _, group = heapq.heappop(self._ready)
            if group.state == QUEUED:
                return group
        return None

    def expire(self, group: Group, when: float) -> None:
        """Make ``group`` stale at ``when`` (its frame's TTL), unless it runs before."""
        group.expires = when
        heapq.heappush(self._expiring, (when, next(self._seq), group))

    def expired(self, now: float) -> list[Group]:
        """Groups whose frame's TTL ran out by ``now`` (and was not renewed since)."""
        out = []
        while self._expiring and self._expiring[0][0] <= now:
            when, _, group = heapq.heappop(self._expiring)
            if group.expires == when:
                group.expires = None
                out.append(group)
        return out

    def next_due(self) -> float | None:
        """When the earliest delayed group is due or TTL runs out; None when none waits."""
        due = [heap[0][0] for heap in (self._delayed, self._expiring) if heap]
        return min(due) if due else None

    @property
    def explicit(self) -> list[str]:
        """The explicit order by function name (first = most important)."""
        return sorted(self._explicit, key=self._explicit.__getitem__)

    @explicit.setter
    def explicit(self, names: Iterable[str]) -> None:
        self._explicit = {name: i for i, name in enumerate(names)}
        self.rerank()

    def rerank(self) -> None:
        """Rank the ready groups again (priorities or visibility changed)."""
        self._ready = [(self._rank(g), seq, g) for _, seq, g in self._ready]
        heapq.heapify(self._ready)

    def _rank(self, group: Group) -> tuple[Any, ...]:
        members = list(group.members)
        explicit = self._explicit.get(group.fn.name, len(self._explicit))
        visible = any(m.visible for m in members) or not members
        level = min((PRIORITIES.index(m.priority) for m in members), default=1)
        return (explicit, 0 if visible else 1, level, group.stale_since)
