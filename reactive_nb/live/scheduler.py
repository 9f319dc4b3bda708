"""The scheduler: which live queries a change makes stale, and in what order they re-run.

Live queries with the same (tenant, cache key, definition) share one *group* and one run.
The ``WatchIndex`` answers which groups a change touches in O(affected). Marking stale is
cheap and idempotent and happens in the thread that delivers the change (so
``live.wait()`` right after a local commit already sees the query as stale); re-running
is coalesced: a group is queued at most once, a group invalidated while running runs
again right after, and two runs of one group are at least ``min_interval`` apart. The
next group to run is the best-ranked ready one: explicit ``db.priorities``, then visible,
then high > normal > low, then age. A failed run keeps the last good frame and is retried
with back-off.

The scheduler owns no thread: a ``WorkerPool`` (``workers.py``) calls ``take`` and
``run``; tests call ``step()`` / ``run_until_idle()`` with an injected clock instead, like
shiny's ``reactive.flush()``.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from reactive_nb.errors import one_line
from reactive_nb.events import DEFAULT_TENANT, Change
from reactive_nb.live.following import Following
from reactive_nb.live.groups import (
    CLOSED,
    DELAYED,
    IDLE,
    NEW,
    QUEUED,
    RUNNING,
    Group,
    GroupKey,
    Member,
    Update,
)
from reactive_nb.live.index import WatchIndex
from reactive_nb.live.queue import RunQueue

if TYPE_CHECKING:
    from reactive_nb.live.functions import ReactiveFunction

logger = logging.getLogger(__name__)

#: Longest idle wait of a worker: how soon groups of garbage-collected live queries (their
#: frames, their followed tenant streams) are released when nothing else happens.
REAP_INTERVAL = 1.0

class Scheduler:
    """Turns changes into ordered, coalesced refreshes; ``take``/``run`` do the work."""

    def __init__(self, *, min_interval: float = 0.05,
                 follow: Callable[[str], None] | None = None,
                 unfollow: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval = min_interval
        self._following = Following(follow, unfollow, self._wants)
        self.clock = clock  # monotonic seconds; tests step it
        # _lock guards every field below; it is held for dict/heap operations only, never
        # while running a handler, touching Redis or setting traits (which may send
        # widget messages). Contention is low: one short section per change and per run.
        self._lock = threading.Lock()
        self.wake = threading.Condition(self._lock)  # a worker: a group may be due
        # wait_fresh(): a run finished or a group went; a run's end wakes no idle worker
        self.settled = threading.Condition(self._lock)
        self._groups: dict[GroupKey, Group] = {}
        self._index: WatchIndex[Group] = WatchIndex()
        self._queue = RunQueue()
        self._stamps = itertools.count(1)  # Update.seq: drawn under _lock only
        self.on_attach: Callable[[], None] | None = None  # the worker pool starts lazily
        self.closed = False
        # Keys of groups one of whose live queries was garbage-collected. Appended by
        # weakref finalizers, which may run in any thread at any moment (even inside our
        # own locked sections), so it is a lock-free deque drained by reap().
        self._gone: collections.deque[GroupKey] = collections.deque()
        #: Set whenever reap() released something (tests wait on it).
        self.reaped = threading.Event()

    # -- membership ------------------------------------------------------------------------

    def attach(self, live: Member) -> None:
        """Register a live query: join its group, or create one and show cached data at once."""
        with self._lock:
            group = self._groups.get(live.group_key)
            created = group is None
            if group is None:
                group = Group(live.function, live.tenant, live.key, dict(live.inputs))
                self._groups[live.group_key] = group
                self._index.add(group)
            group.members.add(live)
            weakref.finalize(live, self._gone.append, live.group_key)
            joined = group.snapshot(next(self._stamps))
        self._following.attached(live.tenant)
        if self.on_attach is not None:
            self.on_attach()
        if not created:
            self._push([live], joined)
            return
        peeked = live.function.peek(live.tenant, live.key)  # I/O: outside the lock
        with self._lock:
            if peeked is not None:
                group.df = peeked.df
                if peeked.fresh:
                    self._expire_locked(group, peeked.age)
            if group.state == NEW:
                group.state = IDLE
                if peeked is None or not peeked.fresh:
                    self._mark_stale_locked(group)
            update = group.snapshot(next(self._stamps))
            members = list(group.members)
        if peeked is not None:
            update = update.but(updated_at=datetime.fromtimestamp(peeked.created_at,
                                                                  timezone.utc))
        self._push(members, update)

    def detach(self, live: Member) -> None:
        with self._lock:
            group = self._groups.get(live.group_key)
            if group is not None:
                group.members.discard(live)
                if not group.members:
                    self._drop_locked(group)
            emptied = not self._index.has_tenant(live.tenant)
        if emptied:
            self._following.released(live.tenant)

    def watch_tenants(self, follow: Callable[[str], None],
                      unfollow: Callable[[str], None]) -> Callable[[], None]:
        """Also call ``follow(tenant)`` whenever a live query of ``tenant`` attaches and
        ``unfollow(tenant)`` once its last one is gone (tenant databases' listeners).
        Both run outside the lock and must be idempotent. Returns the removal."""
        return self._following.add(follow, unfollow)

    def revoke(self, tenant: str, error: str) -> int:
        """Stop every live query of ``tenant`` and clear its frame: the user lost access
        (or the tenant is gone), so the data must not stay on screen. Each one gets status
        ``error`` with ``error``, ``df`` None, and is refreshed no more (a new live query
        is needed once access is back). A run in flight delivers to nobody. Returns how
        many live queries were stopped."""
        stopped: list[Member] = []
        with self._lock:
            for group in [g for g in self._groups.values() if g.tenant == tenant]:
                stopped.extend(group.members)
                group.members = weakref.WeakSet()
                group.df, group.error = None, error
                self._drop_locked(group)
            self.settled.notify_all()  # wait_fresh() of these returns (False) at once
            update = Update(None, "error", error, cleared=True, seq=next(self._stamps))
        self._push(stopped, update)
        if stopped:
            self._following.released(tenant)
        return len(stopped)

    def _wants(self, tenant: str) -> bool:
        """Whether some live query needs the tenant's changes (unscoped ones: any)."""
        with self._lock:
            if tenant == DEFAULT_TENANT:
                return bool(self._index.tenants())
            return self._index.has_tenant(tenant)

    def reindex(self, fn: ReactiveFunction) -> None:
        """The function's watched tables changed (inferred dependencies grew)."""
        watched = fn.watched  # outside the lock: it may re-read the catalog
        with self._lock:
            for group in self._index.of_function(fn):
                self._index.reindex(group, watched)

    def _drop_locked(self, group: Group) -> None:
        self._groups.pop(group.group_key, None)
        self._index.remove(group)
        group.state = CLOSED

    def reap(self) -> int:
        """Release the groups whose live queries were all garbage-collected: their frames,
        index entries and followed tenant streams. Returns how many were dropped."""
        if not self._gone:
            return 0
        emptied: set[str] = set()
        dropped = 0
        with self._lock:
            while self._gone:
                group = self._groups.get(self._gone.popleft())
                if group is None or group.members or group.state == RUNNING:
                    continue  # already gone, still watched, or its run will see it
                self._drop_locked(group)
                dropped += 1
                if not self._index.has_tenant(group.tenant):
                    emptied.add(group.tenant)
        for tenant in emptied:
            self._following.released(tenant)
        if dropped:
            self.reaped.set()
        return dropped

    def members(self) -> list[Member]:
        """Every live query attached now (strong references: drop the list soon)."""
        with self._lock:
            return [m for group in self._groups.values() for m in group.members]

    def tenants(self) -> list[str]:
        """Tenants this process has live queries for."""
        with self._lock:
            return self._index.tenants()

    # -- invalidation ----------------------------------------------------------------------

    def on_change(self, change: Change) -> None:
        """Mark every group whose watched tables meet the change stale (O(affected))."""
        updates: list[tuple[list[Member], Update]] = []
        with self._lock:
            dropped = False
            for group in self._index.affected(change):
                if not group.members:  # its live queries were garbage-collected
                    self._drop_locked(group)
                    dropped = True
                    continue
                before = group.state
                self._mark_stale_locked(group)
                if group.state != before or group.dirty:
                    updates.append((list(group.members), group.snapshot(next(self._stamps))))
            emptied = dropped and not self._index.has_tenant(change.tenant)
        for members, update in updates:
            self._push(members, update)
        if emptied:
            self._following.released(change.tenant)

    def refresh(self, live: Member) -> None:
        """Queue a run now, bypassing the cache."""
        with self._lock:
            group = self._groups.get(live.group_key)
            if group is None:
                return
            group.force = True
            self._mark_stale_locked(group, respect_interval=False)
            update, members = group.snapshot(next(self._stamps)), list(group.members)
        self._push(members, update)

    def _expire_locked(self, group: Group, age: float) -> None:
        """With a TTL, a frame ``age`` seconds old goes stale when the TTL runs out, with
        no write needed: its live queries refresh then."""
        ttl = group.fn.ttl
        if ttl is not None:
            self._queue.expire(group, self.clock() + max(ttl - age, 0.0))

    def _mark_stale_locked(self, group: Group, respect_interval: bool = True) -> None:
        now = self.clock()
        if group.state == RUNNING:
            group.dirty = True
            return
        if group.state in (QUEUED, DELAYED, NEW, CLOSED):
            return
        group.stale_since = now
        if respect_interval and group.not_before > now:
            self._queue.delay(group, group.not_before)
        else:
            self._queue.queue(group)
        self.wake.notify()

    # -- order -----------------------------------------------------------------------------

    def set_priorities(self, names: Iterable[str]) -> None:
        with self._lock:
            self._queue.explicit = names

    @property
    def priorities(self) -> list[str]:
        """The explicit order set by ``db.priorities`` (first = most important)."""
        with self._lock:
            return self._queue.explicit

    def visibility_changed(self) -> None:
        with self._lock:
            self._queue.rerank()

    # -- running ---------------------------------------------------------------------------

    def _next_locked(self) -> Group | None:
        """Pop the best due group; None if none is due."""
        now = self.clock()
        for expired in self._queue.expired(now):
            if expired.state == IDLE:
                self._mark_stale_locked(expired)
        while (group := self._queue.pop(now)) is not None:
            if group.members:
                return group
            self._drop_locked(group)  # garbage-collected meanwhile: nobody to refresh
        return None

    def take(self, stop: threading.Event | None = None) -> tuple[Group, bool] | None:
        """The next group to run, marked RUNNING, and whether to bypass the cache.

        With ``stop`` it blocks until a group is due or ``stop`` is set (then None);
        without, it returns None at once when nothing is due.
        """
        self.reap()
        with self._lock:
            while True:
                group = self._next_locked()
                if group is not None:
                    group.state, group.dirty = RUNNING, False
                    force, group.force = group.force, False
                    return group, force
                if stop is None or stop.is_set():
                    return None
                due = self._queue.next_due()
                timeout = REAP_INTERVAL if due is None else min(due - self.clock(),
                                                                REAP_INTERVAL)
                if not self.wake.wait(max(timeout, 0.0005)) and self._gone:
                    return None  # idle: let the caller reap, then come back

    def step(self) -> bool:
        """Run the best due group in the calling thread; False if none is due (for tests)."""
        taken = self.take()
        if taken is None:
            return False
        self.run(*taken)
        return True

    def run_until_idle(self, limit: int = 10_000) -> int:
        """Run due groups until none is due (delayed ones wait for the clock); the count."""
        runs = 0
        while runs < limit and self.step():
            runs += 1
        return runs

    def run(self, group: Group, force: bool) -> None:
        """Run one taken group and push the outcome to its members; never raises."""
        try:
            self._run(group, force)
        except Exception:  # never let a worker die silently
            logger.exception("reactive_nb failed while refreshing %s", group.key)
            with self._lock:
                if group.state == RUNNING:
                    group.state = IDLE

    def _run(self, group: Group, force: bool) -> None:
        """Members are held strongly only inside this call, so a live query dropped by its
        user can be garbage-collected between runs."""
        with self._lock:
            starting = group.snapshot(next(self._stamps), status="refreshing").but(attempt=True)
            members = list(group.members)
        self._push(members, starting)
        del members
        error: str | None = None
        fetched = None
        try:
            fetched = group.fn.fetch(group.tenant, group.inputs, key=group.key, force=force)
        except Exception as exc:
            error = one_line(exc, typed=True)
            logger.warning("refresh of %s failed: %s", group.key, error)
        # What the function watches now, outside the lock (it may re-read the catalog):
        # DDL (a view redefined over other tables) changes it, and runs follow every DDL.
        watched = group.fn.watched
        with self._lock:
            if group.state != CLOSED:
                self._index.reindex(group, watched)
            now = self.clock()
            if fetched is not None:
                group.succeeded(fetched.df, now + self.min_interval)
                self._expire_locked(group, fetched.age)
            else:
                group.failed(error, now, self.min_interval)
            update = group.snapshot(next(self._stamps))
            if fetched is not None:
                update = update.but(status="stale" if group.dirty else "fresh",
                                    updated_at=datetime.now(timezone.utc), ran=not fetched.hit)
            members = list(group.members)
        # Traits are set while the group is still RUNNING, so no later run can overtake us.
        self._push(members, update)
        with self._lock:
            if group.state == CLOSED:
                return
            group.state = IDLE
            if group.dirty:
                group.dirty = False
                self._mark_stale_locked(group)  # wakes a worker
            self.settled.notify_all()

    # -- waiting and state -----------------------------------------------------------------

    def wait_fresh(self, live: Member, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                group = self._groups.get(live.group_key)
                if group is None or group.fresh:
                    return group is not None
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.settled.wait(left)

    def state_of(self, group_key: GroupKey) -> dict[str, Any]:
        """The scheduling state of a group (for status displays and tests)."""
        with self._lock:
            group = self._groups.get(group_key)
            if group is None:
                return {"state": CLOSED, "members": 0}
            return {"state": group.state, "dirty": group.dirty, "failures": group.failures,
                    "members": len(group.members)}

    def _push(self, members: list[Member], update: Update) -> None:
        for live in members:
            try:
                live.receive(update)
            except Exception:
                logger.exception("observer of %s failed", live.key)

    def close(self) -> None:
        """Wake every waiter; workers see their stop event."""
        with self._lock:
            self.closed = True
            self.wake.notify_all()
            self.settled.notify_all()

