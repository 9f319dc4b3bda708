"""The scheduler: which live queries a change makes stale, and in what order they re-run.

Live queries with the same (tenant, cache key) share one *group* and one run. An index
(tenant, table) -> groups makes a change cost O(affected groups). Marking stale is cheap
and idempotent and happens in the thread that delivers the change (so ``live.wait()``
right after a local commit already sees the query as stale); re-running is coalesced:
a group is queued at most once, a group invalidated while running runs again right after,
and two runs of one group are at least ``min_interval`` apart. Worker threads take the
best-ranked ready group: explicit ``db.priorities``, then visible, then high > normal >
low, then age. A failed run keeps the last good frame and is retried with back-off.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reactive_nb.events import ALL_TABLES, Change
from reactive_nb.live.functions import PRIORITIES

if TYPE_CHECKING:
    import pandas as pd

    from reactive_nb.live.functions import ReactiveFunction
    from reactive_nb.live.query import LiveQuery

logger = logging.getLogger(__name__)

BACKOFF_START = 0.1
BACKOFF_CAP = 30.0

# Group states.
NEW, IDLE, QUEUED, DELAYED, RUNNING = "new", "idle", "queued", "delayed", "running"


@dataclass(eq=False)
class Group:
    """Every live query of one (tenant, key, definition): they share one run and one frame."""

    fn: ReactiveFunction
    tenant: str
    key: str
    inputs: dict[str, Any]
    members: weakref.WeakSet[LiveQuery] = field(default_factory=weakref.WeakSet)
    state: str = NEW
    dirty: bool = False  # invalidated while running: run again right after
    force: bool = False  # next run bypasses the cache (explicit refresh)
    df: pd.DataFrame | None = None
    error: str | None = None
    failures: int = 0
    not_before: float = 0.0  # earliest start of the next run (min_interval, back-off)
    stale_since: float = 0.0
    indexed: frozenset[str] = frozenset()

    @property
    def group_key(self) -> tuple[str, str, int]:
        return (self.tenant, self.key, self.fn.fingerprint)

    @property
    def fresh(self) -> bool:
        return self.state == IDLE and not self.dirty and self.df is not None and not self.error


@dataclass
class _Update:
    """Trait values to push to a group's members once the lock is released."""

    members: list[LiveQuery]
    values: dict[str, Any]


class Scheduler:
    """Turns changes into ordered, coalesced refreshes run by a small worker pool."""

    def __init__(self, *, workers: int = 4, min_interval: float = 0.05,
                 follow: Callable[[str], None] | None = None,
                 unfollow: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.min_interval = min_interval
        self._follow = follow
        self._unfollow = unfollow
        self._clock = clock
        # _lock guards every field below; it is held for dict/heap operations only, never
        # while running a handler, touching Redis or setting traits (which may send
        # widget messages). Contention is low: one short section per change and per run.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._groups: dict[tuple[str, str, int], Group] = {}
        self._index: dict[tuple[str, str], set[Group]] = {}
        self._by_tenant: dict[str, set[Group]] = {}
        self._ready: list[tuple[tuple[Any, ...], int, Group]] = []
        self._delayed: list[tuple[float, int, Group]] = []
        self._seq = itertools.count()
        self._explicit: dict[str, int] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.changes_seen = 0

    # -- membership ------------------------------------------------------------------------

    def attach(self, live: LiveQuery) -> None:
        """Register a live query: join its group, or create one and show cached data at once."""
        with self._lock:
            group = self._groups.get(live.group_key)
            created = group is None
            if group is None:
                group = Group(live.function, live.tenant, live.key, dict(live.inputs))
                self._groups[live.group_key] = group
                self._reindex_locked(group)
                self._by_tenant.setdefault(live.tenant, set()).add(group)
            group.members.add(live)
            joined = self._snapshot(group)
        if self._follow is not None:
            self._follow(live.tenant)
        self._start_workers()
        if not created:
            self._push([live], joined.values)
            return
        peeked = live.function.peek(live.tenant, live.key)  # I/O: outside the lock
        with self._lock:
            if peeked is not None:
                group.df = peeked[0]
            if group.state == NEW:
                group.state = IDLE
                if peeked is None or not peeked[1]:
                    self._mark_stale_locked(group)
            update = self._snapshot(group)
        if peeked is not None:
            from datetime import datetime, timezone

            update.values["updated_at"] = datetime.fromtimestamp(peeked[2], timezone.utc)
        self._push(update.members, update.values)

    def detach(self, live: LiveQuery) -> None:
        with self._lock:
            group = self._groups.get(live.group_key)
            if group is not None:
                group.members.discard(live)
                if not group.members:
                    self._drop_locked(group)
            emptied = live.tenant not in self._by_tenant
        if emptied:
            self._stop_following(live.tenant)

    def _stop_following(self, tenant: str) -> None:
        """Stop reading a tenant's changes once none of its live queries is left.

        Outside the lock (it talks to Redis); a live query attached meanwhile may have
        followed just before our unfollow, so the wish is re-checked afterwards.
        """
        if self._unfollow is None:
            return
        self._unfollow(tenant)
        with self._lock:
            wanted = tenant in self._by_tenant
        if wanted and self._follow is not None:
            self._follow(tenant)

    def reindex(self, fn: ReactiveFunction) -> None:
        """The function's watched tables changed (inferred dependencies grew)."""
        with self._lock:
            for group in list(self._groups.values()):
                if group.fn is fn:
                    self._reindex_locked(group)

    def _reindex_locked(self, group: Group) -> None:
        watched = group.fn.watched - {ALL_TABLES}
        for table in group.indexed - watched:
            self._index.get((group.tenant, table), set()).discard(group)
        for table in watched - group.indexed:
            self._index.setdefault((group.tenant, table), set()).add(group)
        group.indexed = watched

    def _drop_locked(self, group: Group) -> None:
        self._groups.pop(group.group_key, None)
        for table in group.indexed:
            bucket = self._index.get((group.tenant, table))
            if bucket is not None:
                bucket.discard(group)
                if not bucket:
                    del self._index[(group.tenant, table)]
        tenant_groups = self._by_tenant.get(group.tenant)
        if tenant_groups is not None:
            tenant_groups.discard(group)
            if not tenant_groups:
                del self._by_tenant[group.tenant]
        group.state = "closed"

    def tenants(self) -> list[str]:
        with self._lock:
            return list(self._by_tenant)

    # -- invalidation ----------------------------------------------------------------------

    def on_change(self, change: Change) -> None:
        """Mark every group whose watched tables meet the change stale (O(affected))."""
        updates: list[_Update] = []
        with self._lock:
            self.changes_seen += 1
            if change.all_tables:
                affected: Iterable[Group] = list(self._by_tenant.get(change.tenant, ()))
            else:
                hit: set[Group] = set()
                for table in change.tables:
                    hit |= self._index.get((change.tenant, table), set())
                affected = hit
            dropped = False
            for group in affected:
                if not group.members:  # its live queries were garbage-collected
                    self._drop_locked(group)
                    dropped = True
                    continue
                before = group.state
                self._mark_stale_locked(group)
                if group.state != before or group.dirty:
                    updates.append(self._snapshot(group))
            emptied = dropped and change.tenant not in self._by_tenant
        for update in updates:
            self._push(update.members, update.values)
        if emptied:
            self._stop_following(change.tenant)

    def mark_tenant_stale(self, tenant: str) -> None:
        """Re-check everything a tenant's live queries watch (after a gap in the change feed)."""
        self.on_change(Change(tenant, frozenset({ALL_TABLES}), origin="gap"))

    def refresh(self, live: LiveQuery) -> None:
        """Queue a run now, bypassing the cache."""
        with self._lock:
            group = self._groups.get(live.group_key)
            if group is None:
                return
            group.force = True
            self._mark_stale_locked(group, respect_interval=False)
            update = self._snapshot(group)
        self._push(update.members, update.values)

    def _mark_stale_locked(self, group: Group, respect_interval: bool = True) -> None:
        now = self._clock()
        if group.state == RUNNING:
            group.dirty = True
            return
        if group.state in (QUEUED, DELAYED, NEW, "closed"):
            return
        group.stale_since = now
        if respect_interval and group.not_before > now:
            group.state = DELAYED
            heapq.heappush(self._delayed, (group.not_before, next(self._seq), group))
        else:
            self._queue_locked(group)
        self._wake.notify()

    def _queue_locked(self, group: Group) -> None:
        group.state = QUEUED
        heapq.heappush(self._ready, (self._rank(group), next(self._seq), group))

    # -- order -----------------------------------------------------------------------------

    def set_priorities(self, names: Iterable[str]) -> None:
        with self._lock:
            self._explicit = {name: i for i, name in enumerate(names)}
            self._rerank_locked()

    def visibility_changed(self) -> None:
        with self._lock:
            self._rerank_locked()

    def _rerank_locked(self) -> None:
        self._ready = [(self._rank(g), seq, g) for _, seq, g in self._ready]
        heapq.heapify(self._ready)

    def _rank(self, group: Group) -> tuple[Any, ...]:
        members = list(group.members)
        explicit = self._explicit.get(group.fn.name, len(self._explicit))
        visible = any(m.visible for m in members) or not members
        level = min((PRIORITIES.index(m.priority) for m in members), default=1)
        return (explicit, 0 if visible else 1, level, group.stale_since)

    # -- running ---------------------------------------------------------------------------

    def _start_workers(self) -> None:
        with self._lock:
            if self._threads or self._stop.is_set():
                return
            for i in range(self.workers):
                thread = threading.Thread(target=self._work, name=f"reactive_nb-worker-{i}",
                                          daemon=True)
                self._threads.append(thread)
                thread.start()

    def _next_locked(self) -> Group | None:
        """Pop the best ready group, promoting delayed ones that are due; None if none."""
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, group = heapq.heappop(self._delayed)
            if group.state == DELAYED:
                self._queue_locked(group)
        while self._ready:
            _, _, group = heapq.heappop(self._ready)
            if group.state == QUEUED:
                if not group.members:  # garbage-collected meanwhile: nobody to refresh
                    self._drop_locked(group)
                    continue
                return group
        return None

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                group = self._next_locked()
                if group is None:
                    if self._stop.is_set():  # close() may have notified before we got here
                        return
                    timeout = (self._delayed[0][0] - self._clock()) if self._delayed else None
                    self._wake.wait(timeout if timeout is None else max(timeout, 0.0005))
                    continue
                group.state, group.dirty = RUNNING, False
                force, group.force = group.force, False
            try:
                self._run(group, force)
            except Exception:  # never let a worker die silently
                logger.exception("reactive_nb worker failed while refreshing %s", group.key)
                with self._lock:
                    if group.state == RUNNING:
                        group.state = IDLE

    def run_once(self) -> bool:
        """Run the best ready group in the calling thread (for tests); False if none."""
        with self._lock:
            group = self._next_locked()
            if group is None:
                return False
            group.state, group.dirty = RUNNING, False
            force, group.force = group.force, False
        self._run(group, force)
        return True

    def _run(self, group: Group, force: bool) -> None:
        """Run one group (state RUNNING) and push the outcome to its members.

        Members are held strongly only inside this call, so a live query dropped by its
        user can be garbage-collected between runs.
        """
        from datetime import datetime, timezone

        with self._lock:
            starting = self._snapshot(group, status="refreshing")
        self._push(starting.members, starting.values)
        del starting
        error: str | None = None
        fetched = None
        try:
            fetched = group.fn.fetch(group.tenant, group.inputs, key=group.key, force=force)
        except Exception as exc:
            error = _one_line(exc)
            logger.warning("refresh of %s failed: %s", group.key, error)
        with self._lock:
            now = self._clock()
            if fetched is not None:
                group.df, group.error, group.failures = fetched.df, None, 0
                group.not_before = now + self.min_interval
            else:
                group.error = error
                group.failures += 1
                delay = min(BACKOFF_START * 2 ** (group.failures - 1), BACKOFF_CAP)
                group.not_before = now + max(delay, self.min_interval)
                group.dirty = True  # still stale: retry after the back-off
            values = self._snapshot(group).values
            if fetched is not None:
                values["status"] = "stale" if group.dirty else "fresh"
                values["updated_at"] = datetime.now(timezone.utc)
                values["ran"] = not fetched.hit
            members = list(group.members)
        # Traits are set while the group is still RUNNING, so no later run can overtake us.
        self._push(members, values)
        with self._lock:
            if group.state == "closed":
                return
            group.state = IDLE
            if group.dirty:
                group.dirty = False
                self._mark_stale_locked(group)
            self._wake.notify_all()

    # -- waiting and state -----------------------------------------------------------------

    def wait_fresh(self, live: LiveQuery, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                group = self._groups.get(live.group_key)
                if group is None or group.fresh:
                    return group is not None
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)

    def state(self, live: LiveQuery) -> dict[str, Any]:
        """The scheduling state of a live query's group (for status displays and tests)."""
        return self.state_of(live.group_key)

    def state_of(self, group_key: tuple[str, str, int]) -> dict[str, Any]:
        with self._lock:
            group = self._groups.get(group_key)
            if group is None:
                return {"state": "closed", "members": 0}
            return {"state": group.state, "dirty": group.dirty, "failures": group.failures,
                    "members": len(group.members)}

    def _snapshot(self, group: Group, status: str | None = None) -> _Update:
        if status is None:
            if group.error is not None:
                status = "error"
            elif group.df is None:
                status = "loading"
            elif group.state in (QUEUED, DELAYED, NEW) or group.dirty:
                status = "stale"
            elif group.state == RUNNING:
                status = "refreshing"
            else:
                status = "fresh"
        if status == "refreshing" and group.df is None:
            status = "loading"
        return _Update(list(group.members), {"df": group.df, "status": status,
                                             "error": group.error})

    def _push(self, members: list[LiveQuery], values: dict[str, Any]) -> None:
        for live in members:
            try:
                live._apply(values)
            except Exception:
                logger.exception("observer of %s failed", live.key)

    # -- shutdown --------------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._wake.notify_all()
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=10)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
