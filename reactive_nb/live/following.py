"""Which tenants' changes this process reads.

The bus follows a tenant's stream while one of its live queries is attached (and the
unscoped stream while any is: unscoped writes reach every tenant); extra hooks (tenant
databases' listeners, ``Scheduler.watch_tenants``) are told the same. Following talks to
Redis, so it runs outside the scheduler's lock; ``wants(tenant)`` asks the scheduler,
under its lock, whether a tenant is still needed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from reactive_nb.events import DEFAULT_TENANT

Hook = Callable[[str], None]


class Following:
    """Follow on the first live query of a tenant, unfollow after its last one."""

    def __init__(self, follow: Hook | None, unfollow: Hook | None,
                 wants: Callable[[str], bool]) -> None:
        self._follow = follow
        self._unfollow = unfollow
        self._wants = wants
        self._lock = threading.Lock()  # guards the replacement of _hooks
        #: (follow, unfollow) pairs besides the bus. Replaced, never mutated.
        self._hooks: tuple[tuple[Hook, Hook], ...] = ()

    def attached(self, tenant: str) -> None:
        """A live query of ``tenant`` attached (every call is idempotent)."""
        if self._follow is not None:
            self._follow(tenant)
            if tenant != DEFAULT_TENANT:  # unscoped writes reach every tenant
                self._follow(DEFAULT_TENANT)
        for follow, _ in self._hooks:
            follow(tenant)

    def released(self, tenant: str) -> None:
        """Stop reading a tenant's changes once none of its live queries is left.

        A live query attached meanwhile may have followed just before our unfollow, so
        the wish is re-checked afterwards.
        """
        hooks = self._hooks
        if self._unfollow is None and not hooks:
            return
        if self._wants(tenant):
            return
        if self._unfollow is not None:
            self._unfollow(tenant)
        for _, unfollow in hooks:
            unfollow(tenant)
        if self._wants(tenant):
            if self._follow is not None:
                self._follow(tenant)
            for follow, _ in hooks:
                follow(tenant)

    def add(self, follow: Hook, unfollow: Hook) -> Callable[[], None]:
        """Also call ``follow(tenant)`` / ``unfollow(tenant)``; returns the removal."""
        pair = (follow, unfollow)
        with self._lock:
            self._hooks = (*self._hooks, pair)

        def remove() -> None:
            with self._lock:
                self._hooks = tuple(h for h in self._hooks if h is not pair)

        return remove
