"""The in-memory bus: the twin of :class:`~reactive_nb.stores.bus.redis.RedisBus` for a
single process."""

from __future__ import annotations

from collections.abc import Callable

from reactive_nb.events import Change
from reactive_nb.stores.bus.base import Callback, Subscribers

__all__ = ["MemoryBus"]


class MemoryBus:
    """The bus of a single process: publish calls the subscribers, nothing else."""

    def __init__(self) -> None:
        self._subscribers = Subscribers()

    def publish(self, change: Change, *, remote: bool = True) -> None:
        self._subscribers.deliver(change)

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        return self._subscribers.add(callback)

    def follow(self, tenant: str) -> None:
        """Nothing to do: every change of this process is already delivered."""

    def unfollow(self, tenant: str) -> None:
        """Nothing to do (see :meth:`follow`)."""

    def close(self) -> None:
        """Nothing to release; subscribers stay registered."""

    def __enter__(self) -> MemoryBus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
