"""The :class:`Bus` interface, the :data:`Callback` type, and the subscriber list both
implementations deliver through."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from reactive_nb.events import Change

__all__ = ["Bus", "Callback"]

# The package's logger: every bus module logs under one name.
logger = logging.getLogger("reactive_nb.stores.bus")

#: A subscriber: called once per change, must return quickly (e.g. enqueue and return).
Callback = Callable[[Change], None]


@runtime_checkable
class Bus(Protocol):
    """Carries changes to subscribers: this process's at once, other processes' if shared."""

    def publish(self, change: Change, *, remote: bool = True) -> None:
        """Deliver to this process's subscribers now, in the caller's thread, then (unless
        ``remote`` is False) to other processes. Never raises because a shared backend is
        unreachable."""
        ...

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call ``callback`` for every change from now on; returns the unsubscribe function.

        A callback must be fast; an exception it raises is logged and does not stop
        delivery to the others."""
        ...

    def follow(self, tenant: str) -> None:
        """Also receive other processes' changes for ``tenant`` (idempotent)."""
        ...

    def unfollow(self, tenant: str) -> None:
        """Stop receiving other processes' changes for ``tenant`` (idempotent)."""
        ...

    def close(self) -> None:
        """Stop and join any thread the bus started (idempotent)."""
        ...


class Subscribers:
    """The callbacks of one bus, each under a token so the same callable may subscribe twice."""

    def __init__(self) -> None:
        # Guards _callbacks and _next only. Delivery copies the callbacks and calls them
        # with the lock released, so a callback may (un)subscribe and a slow one cannot
        # stall subscribe() in another thread.
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callback] = {}
        self._next = 0

    def add(self, callback: Callback) -> Callable[[], None]:
        with self._lock:
            token = self._next
            self._next += 1
            self._callbacks[token] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._callbacks.pop(token, None)

        return unsubscribe

    def deliver(self, change: Change) -> None:
        with self._lock:
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            try:
                callback(change)
            except Exception:
                logger.exception("change subscriber %r failed on %s", callback, change.to_json())

