"""The worker pool: a few named threads that take due groups from the scheduler and run them.

Started lazily (at the first live query), stopped by ``close``. Tests that want to drive
the scheduler step by step create the ReactiveDB with ``workers=0`` and call
``db.scheduler.step()`` instead.
"""

from __future__ import annotations

import threading

from reactive_nb.live.scheduler import Scheduler
from reactive_nb.threads import Background


class WorkerPool:
    """``size`` threads running ``scheduler.take`` / ``scheduler.run`` until closed."""

    def __init__(self, scheduler: Scheduler, size: int) -> None:
        self._scheduler = scheduler
        self._size = size
        self._threads: list[Background] = []
        self._lock = threading.Lock()  # guards _threads and _closed (start vs close)
        self._closed = False

    def start(self) -> None:
        with self._lock:
            if self._threads or self._closed:
                return
            self._threads = [Background(f"worker-{i}", self._loop, wake=self._wake)
                             for i in range(self._size)]
        for thread in self._threads:
            thread.start()

    def _wake(self) -> None:
        with self._scheduler.wake:
            self._scheduler.wake.notify_all()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            taken = self._scheduler.take(stop)
            if taken is not None:
                self._scheduler.run(*taken)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.stopping.set()
        for thread in threads:
            thread.stop()
