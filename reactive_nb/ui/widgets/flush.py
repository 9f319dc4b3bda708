"""The one writer of every live table: a shared `reactive_nb-widget-flush` thread.

Sources change on worker threads; if each observer pushed to its widget, several threads
would write one widget at once (ipywidgets has no locks) and a hot table would flood the
browser. Observers only mark a widget dirty here; this thread pushes each dirty widget's
*latest* state: a new frame at most once per `interval` per widget (the first after a
quiet period goes out at once, later ones in the same window are coalesced into one push
at its end, including changes made while a push was under way); a push that carries only
a change of status (no new frame) does not open that window.

The thread starts with the first request and stops (joined) when the last registered
widget unregisters, or by `stop()` (`reactive_nb.ui.widgets.stop_flush_thread`).

Tests drive a `Flusher(clock=fake, threaded=False)` step by step instead, like the
scheduler's ``step()``: no thread is started and ``flush_due()`` pushes, on the calling
thread, every widget whose time has come by the injected clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from reactive_nb.threads import Background

logger = logging.getLogger(__name__)

THREAD_NAME = "reactive_nb-widget-flush"


class Flushable(Protocol):
    """What the flusher needs from a widget: push its latest state (never raises) and
    say whether that push carried a new frame."""

    def _flush(self) -> bool: ...


class Flusher:
    """Schedules throttled pushes of dirty widgets, on one daemon thread or, with
    ``threaded=False``, whenever the owner calls `flush_due()`."""

    def __init__(
        self,
        interval: float = 0.1,
        *,
        clock: Callable[[], float] = time.monotonic,
        threaded: bool = True,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.threaded = threaded
        # Guards every field below. Held only to read/update this bookkeeping, never
        # while a widget is flushed; contention is a dict update per trait change.
        self._cond = threading.Condition(threading.Lock())
        self._widgets: set[Flushable] = set()
        self._due: dict[Flushable, float] = {}
        self._last_push: dict[Flushable, float] = {}
        self._thread: Background | None = None

    def register(self, widget: Flushable) -> None:
        with self._cond:
            self._widgets.add(widget)

    def unregister(self, widget: Flushable) -> None:
        """Forget `widget`; the thread stops (and is joined) when no widget is left."""
        with self._cond:
            self._widgets.discard(widget)
            self._due.pop(widget, None)
            self._last_push.pop(widget, None)
            last = not self._widgets
        if last:
            self.stop()

    def request(self, widget: Flushable) -> None:
        """Mark `widget` dirty: it will push its latest state within `interval`."""
        with self._cond:
            if widget not in self._widgets or widget in self._due:
                return  # closed, or already scheduled: that push will carry this change
            now = self.clock()
            last = self._last_push.get(widget)
            self._due[widget] = now if last is None else max(now, last + self.interval)
            if self.threaded and (self._thread is None or not self._thread.alive):
                # A fresh thread (and stop event) each time: one told to stop stays stopped.
                self._thread = Background(THREAD_NAME, self._run, wake=self._notify_all)
                self._thread.start()
            self._cond.notify()

    def next_due(self) -> float | None:
        """When the earliest pending push is due (by `clock`); None when none is pending."""
        with self._cond:
            return min(self._due.values()) if self._due else None

    def flush_due(self) -> int:
        """Push every widget whose time has come, on the calling thread; the count pushed.

        Only for an unthreaded flusher (the caller is then the one writer): it is how
        tests step the throttle with an injected clock.
        """
        if self.threaded:
            raise RuntimeError("flush_due() steps a Flusher(threaded=False); "
                               "this one pushes on its own thread")
        with self._cond:
            ready = self._take_due(self.clock())
        self._push(ready)
        return len(ready)

    def stop(self) -> None:
        """Drop pending pushes and stop and join the thread, if any. Idempotent.

        A widget that changes afterwards is requested again (and restarts the thread).
        """
        with self._cond:
            thread, self._thread = self._thread, None
            self._due.clear()
        if thread is not None:
            thread.stop()

    def _notify_all(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _run(self, stop: threading.Event) -> None:
        while True:
            with self._cond:
                ready = self._wait_for_due(stop)
            if ready is None:
                return
            self._push(ready)

    def _push(self, ready: list[Flushable]) -> None:
        """Flush each of `ready` (never with the lock held)."""
        for widget in ready:
            try:
                carried_frame = widget._flush()
            except Exception:
                logger.exception("pushing a live table failed")
                carried_frame = True
            if carried_frame:
                # Only frames open the throttle window: a status change ("refreshing")
                # must not delay the frame that follows it a few ms later.
                with self._cond:
                    if widget not in self._widgets:
                        continue  # unregistered while it pushed: keep no reference
                    now = self.clock()
                    self._last_push[widget] = now
                    if widget in self._due:
                        # Changed again while it pushed: that request saw the previous
                        # window, so it waits for this one to end.
                        self._due[widget] = max(self._due[widget], now + self.interval)

    def _take_due(self, now: float) -> list[Flushable]:
        """With the lock held: remove and return the widgets due at `now`."""
        ready = [w for w, due in self._due.items() if due <= now]
        for widget in ready:
            del self._due[widget]
        return ready

    def _wait_for_due(self, stop: threading.Event) -> list[Flushable] | None:
        """With the lock held: block until some widget is due; None when stopping."""
        while not stop.is_set():
            now = self.clock()
            ready = self._take_due(now)
            if ready:
                return ready
            timeout = min(self._due.values()) - now if self._due else None
            self._cond.wait(timeout)
        return None


#: The flusher of every widget not given one of its own (tests give theirs).
SHARED = Flusher(interval=0.1)


def stop_flush_thread() -> None:
    """Stop and join the shared flush thread (for `%unload_ext`, tests, shutdown).

    It restarts by itself if an open widget changes again afterwards.
    """
    SHARED.stop()
