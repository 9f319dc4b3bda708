"""Groups: every live query of one (tenant, cache key, definition) shares one run and frame.

This module holds what the scheduler keeps per group (``Group``), what it tells a live
query after each step (``Update``), the live query as the scheduler sees it (``Member``)
and the one function that names a group's status.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from reactive_nb.live.functions import Priority, ReactiveFunction

# Group states.
NEW, IDLE, QUEUED, DELAYED, RUNNING, CLOSED = "new", "idle", "queued", "delayed", "running", \
    "closed"

GroupKey = tuple[str, str, int]

#: A failed run is retried after 0.1 s, doubling up to 30 s (never sooner than
#: ``min_interval``).
BACKOFF_START = 0.1
BACKOFF_CAP = 30.0


@dataclass(frozen=True)
class Update:
    """What one scheduling step tells a live query (set as traits, lock released)."""

    df: pd.DataFrame | None
    status: str
    error: str | None
    updated_at: datetime | None = None  # None: unchanged
    ran: bool = False  # the handler ran (not a cache hit)
    attempt: bool = False  # a refresh attempt started
    cleared: bool = False  # drop the frame (access revoked: data must not stay visible)
    #: Order of the scheduler's decisions, taken under its lock. Updates are delivered
    #: after the lock is released, from several threads, so they can arrive out of order:
    #: a live query applies state only from an update newer than the last one it applied.
    seq: int = 0

    def but(self, **changes: Any) -> Update:
        """A copy with ``changes``."""
        return replace(self, **changes)


class Member(Protocol):
    """A live query as the scheduler sees it."""

    @property
    def group_key(self) -> GroupKey: ...
    @property
    def function(self) -> ReactiveFunction: ...
    @property
    def inputs(self) -> dict[str, Any]: ...
    @property
    def key(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def priority(self) -> Priority: ...
    @property
    def visible(self) -> bool: ...
    def receive(self, update: Update) -> None: ...
    def close(self) -> None: ...


@dataclass(eq=False)
class Group:
    """Every live query of one (tenant, key, definition): they share one run and one frame."""

    fn: ReactiveFunction
    tenant: str
    key: str
    inputs: dict[str, Any]
    members: weakref.WeakSet[Member] = field(default_factory=weakref.WeakSet)
    state: str = NEW
    dirty: bool = False  # invalidated while running: run again right after
    force: bool = False  # next run bypasses the cache (explicit refresh)
    df: pd.DataFrame | None = None
    error: str | None = None
    failures: int = 0
    not_before: float = 0.0  # earliest start of the next run (min_interval, back-off)
    stale_since: float = 0.0
    expires: float | None = None  # when its frame's TTL runs out (scheduler clock)

    @property
    def group_key(self) -> GroupKey:
        return (self.tenant, self.key, self.fn.fingerprint)

    @property
    def fresh(self) -> bool:
        return self.state == IDLE and not self.dirty and self.df is not None and not self.error

    def succeeded(self, df: pd.DataFrame, not_before: float) -> None:
        """A run gave ``df``; the next may start at ``not_before``."""
        self.df, self.error, self.failures, self.not_before = df, None, 0, not_before

    def failed(self, error: str | None, now: float, min_interval: float) -> None:
        """A run failed: keep the last good frame, stay stale, retry after the back-off."""
        self.error = error
        self.failures += 1
        delay = min(BACKOFF_START * 2 ** (self.failures - 1), BACKOFF_CAP)
        self.not_before = now + max(delay, min_interval)
        self.dirty = True

    def snapshot(self, seq: int, status: str | None = None) -> Update:
        """The update its members get now, as decision ``seq`` of the scheduler
        (``status`` overrides the derived one)."""
        if status is None:
            if self.error is not None:
                status = "error"
            elif self.df is None:
                status = "loading"
            elif self.state in (QUEUED, DELAYED, NEW) or self.dirty:
                status = "stale"
            elif self.state == RUNNING:
                status = "refreshing"
            else:
                status = "fresh"
        if status == "refreshing" and self.df is None:
            status = "loading"
        return Update(self.df, status, self.error, seq=seq)
