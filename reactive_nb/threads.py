"""One helper for every background thread: named, daemon, stoppable, joined, never silent.

The scheduler's workers, the bus reader, the PostgreSQL listener, the SQLite poller, the
widget flusher and the demo writer all run a loop until asked to stop. ``Background``
gives each the same life cycle: ``start()`` once, ``stop()`` sets the event, wakes the
loop and joins with one timeout, warning when the thread does not end in time; an
exception escaping the loop is logged with the thread's name instead of vanishing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Seconds ``stop()`` waits for a thread to end before warning. Loops look at their stop
#: event at least every ~0.25 s; a reconnect attempt may block up to a connect timeout.
JOIN_TIMEOUT = 10.0

PREFIX = "reactive_nb-"


class Background:
    """A daemon thread named ``reactive_nb-<name>`` running ``loop(stop_event)``.

    ``loop`` returns when the event is set. ``wake`` (optional) is called by ``stop()``
    after setting the event, for loops that block on something else (a condition, a
    socket). ``stop()`` from the thread itself only sets the event.
    """

    def __init__(self, name: str, loop: Callable[[threading.Event], None], *,
                 wake: Callable[[], None] | None = None) -> None:
        self.name = name if name.startswith(PREFIX) else PREFIX + name
        self.stopping = threading.Event()
        self._loop = loop
        self._wake = wake
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards _thread: start/stop may race at close

    @property
    def alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the thread (once; later calls do nothing, as does a call after stop)."""
        with self._lock:
            if self._thread is not None or self.stopping.is_set():
                return
            self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
            self._thread.start()

    def _main(self) -> None:
        try:
            self._loop(self.stopping)
        except BaseException:
            logger.exception("background thread %s died", self.name)
            raise

    def stop(self, timeout: float = JOIN_TIMEOUT) -> bool:
        """Ask the loop to end and join it; False (with a warning) if it did not end."""
        self.stopping.set()
        if self._wake is not None:
            self._wake()
        with self._lock:
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("thread %s did not stop within %.0f s", self.name, timeout)
            return False
        return True
