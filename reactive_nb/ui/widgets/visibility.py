"""Whether a widget's view is visible, as the browser last said, and when that report
is too old to trust.

The browser reports `visible` (IntersectionObserver + page visibility) and sends a
heartbeat every 10 s. Each report and heartbeat calls `source.set_visible(token, v)`.
Decay is lazy, no timer thread: a report older than `VISIBILITY_TTL` seconds means
"unknown", and the widget calls `source.set_visible(token, None)` the next time it looks
(a `visible_state()` call, a source change, a browser message). A source may also decay
on its own by the age of the last `set_visible` call, since a live view refreshes it at
least every 10 s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

VISIBILITY_TTL = 30.0
"""Seconds without a visibility report or heartbeat after which visibility is unknown."""


class VisibilityAge:
    """The age of a widget's last visibility report, by the widget's clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        # Guards the two fields below. Held for field reads/writes only.
        self._lock = threading.Lock()
        self._last_report: float | None = None
        self._decayed = False

    def reported(self) -> None:
        """The browser reported visibility: it is known from now."""
        with self._lock:
            self._last_report = self._clock()
            self._decayed = False

    def alive(self) -> bool:
        """A browser message proves a view is alive: refresh the visibility report's age.
        Returns whether visibility was ever reported."""
        with self._lock:
            if self._last_report is None:
                return False
            self._last_report = self._clock()
            self._decayed = False
            return True

    def check(self) -> tuple[bool, bool]:
        """(known, decays now): whether a report came within `VISIBILITY_TTL`; and True
        once, the first time it is found too old, so its decay is reported once."""
        with self._lock:
            last = self._last_report
            expired = last is not None and self._clock() - last > VISIBILITY_TTL
            decays = expired and not self._decayed
            if decays:
                self._decayed = True
        return last is not None and not expired, decays
