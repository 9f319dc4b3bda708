"""`LiveTable`: the anywidget that shows a live query and keeps itself current.

The browser never receives a whole frame: it asks for the rows it shows (custom message
`{"type": "page", "start", "count", "seq", "sort"}`) and gets only those back
(`{"type": "rows", ...}`); the synced state carries the header, the status and one
window of rows. Each message kind is a TypedDict in `messages.py`; incoming ones are
parsed into their type before they are dispatched. Source changes arrive on worker
threads and reach the browser through the shared flush thread (`flush.py`): one writer
per widget, coalesced, throttled.
Browser messages may be handled on a kernel subshell thread, concurrently with a flush:
the frame/sort cache is guarded by `_lock`, which is never held while sending.

Visibility: the browser reports `visible` (IntersectionObserver + page visibility) and
a heartbeat every 10 s. Each report and heartbeat calls `source.set_visible(token, v)`.
Decay is lazy, no timer thread: `visible_state()` returns None once no report came for
`VISIBILITY_TTL` seconds, and the widget then calls `source.set_visible(token, None)`
the next time it looks (a `visible_state()` call, a source change, a browser message).
A source may also decay on its own by the age of the last `set_visible` call, since a
live view refreshes it at least every 10 s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import pathlib
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anywidget
import traitlets

from reactive_nb.ui.widgets import paging
from reactive_nb.ui.widgets.flush import Flusher
from reactive_nb.ui.widgets.messages import (
    Cell,
    Column,
    PageRequest,
    PythonMessage,
    RowsMessage,
    RowsReply,
    parse_browser_message,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pandas as pd

logger = logging.getLogger(__name__)

_HERE = pathlib.Path(__file__).parent

SOURCE_TRAITS = ("df", "status", "error", "updated_at", "runs")
VISIBILITY_TTL = 30.0
"""Seconds without a visibility report or heartbeat after which visibility is unknown."""
HIGHLIGHT_SECONDS = 1.5
"""How long changed rows stay highlighted after a refresh."""

_FLUSHER = Flusher(interval=0.1)


def stop_flush_thread() -> None:
    """Stop and join the shared flush thread (for `%unload_ext`, tests, shutdown).

    It restarts by itself if an open widget changes again afterwards.
    """
    _FLUSHER.stop()


class TableSource(Protocol):
    """What a LiveTable shows: a `LiveQuery`, or anything with the same traits
    (read only; `observe`/`unobserve` as in traitlets)."""

    @property
    def df(self) -> Any: ...

    @property
    def status(self) -> str: ...

    @property
    def error(self) -> str | None: ...

    @property
    def updated_at(self) -> Any: ...

    @property
    def runs(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def primary_key(self) -> Sequence[str] | None: ...

    def observe(self, handler: Any, names: Any = ...) -> None: ...

    def unobserve(self, handler: Any, names: Any = ...) -> None: ...

    def set_visible(self, token: str, visible: bool | None) -> None: ...


class LiveTable(anywidget.AnyWidget):
    """A paged, sortable, self-updating table of a live query's DataFrame.

    `LiveTable(live, page_size=50)`; display it, or put it in a layout. `close()` stops
    following the source (and the flush thread when it was the last open table).
    """

    _esm = _HERE / "table.js"
    _css = _HERE / "table.css"

    # Python -> browser (written only by __init__ and the flush thread).
    name = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("loading").tag(sync=True)
    error = traitlets.Unicode(None, allow_none=True).tag(sync=True)
    updated_at = traitlets.Unicode(None, allow_none=True).tag(sync=True)
    runs = traitlets.Int(0).tag(sync=True)
    total_rows = traitlets.Int(0).tag(sync=True)
    columns: traitlets.List[Column] = traitlets.List().tag(sync=True)
    version = traitlets.Int(0).tag(sync=True)
    window = traitlets.Dict().tag(sync=True)
    page_size = traitlets.Int(50).tag(sync=True)
    highlight_ms = traitlets.Int(int(HIGHLIGHT_SECONDS * 1000)).tag(sync=True)
    # Browser -> Python (never written by Python).
    sort: traitlets.List[Any] = traitlets.List().tag(sync=True)
    visible = traitlets.Bool(None, allow_none=True).tag(sync=True)

    def __init__(
        self,
        source: TableSource,
        page_size: int = 50,
        *,
        flusher: Flusher | None = None,
        **kwargs: Any,
    ) -> None:
        """`flusher`: the one writer that pushes this table's changes (default: the
        shared flush thread). Tests pass a `Flusher(clock=..., threaded=False)` and step
        it; its clock is also the table's (highlight ages, visibility decay)."""
        self._source = source
        self._flusher = _FLUSHER if flusher is None else flusher
        self._clock = self._flusher.clock
        self._token = f"widget-{uuid.uuid4().hex}"
        # Guards the frame cache below and the visibility bookkeeping. Held for field
        # reads/writes only: never while sorting, diffing, formatting or sending.
        self._lock = threading.Lock()
        # Serialises computing a sort order, so two requests do not sort 1M rows twice.
        self._sort_lock = threading.Lock()
        self._frame: pd.DataFrame | None = None
        self._version = 0
        self._order: npt.NDArray[np.intp] | None = None
        self._order_key: tuple[int, tuple[str, bool]] | None = None
        self._changed: npt.NDArray[np.bool_] | None = None
        self._changed_at = 0.0
        self._window_req = (0, max(1, int(page_size)))
        self._last_report: float | None = None
        self._decayed = False
        self._closed = False

        state = self._collect(initial=True)
        state["page_size"] = max(1, int(page_size))
        super().__init__(**state, **kwargs)
        self.on_msg(self._on_msg)
        self.observe(self._on_visible, names=["visible"])
        self._flusher.register(self)
        source.observe(self._on_source_change, names=list(SOURCE_TRAITS))
        if source.df is not self._frame or source.status != state["status"]:
            self._flusher.request(self)  # changed while we were being built

    # ---- public -------------------------------------------------------------------

    @property
    def source(self) -> TableSource:
        return self._source

    @property
    def token(self) -> str:
        """This widget's identity in `source.set_visible(token, ...)`."""
        return self._token

    def visible_state(self) -> bool | None:
        """The reported visibility, or None when never reported or silent too long."""
        with self._lock:
            last, value = self._last_report, self.visible
            expired = last is not None and self._clock() - last > VISIBILITY_TTL
            report_decay = expired and not self._decayed
            if report_decay:
                self._decayed = True
        if report_decay:
            self._report(None)
        if last is None or expired:
            return None
        return value if value is None else bool(value)

    def page(self, start: int, count: int, sort: Sequence[Any] | None = None) -> RowsMessage:
        """The `rows` payload for the window [start, start+count) in `sort` order
        (default: the current `sort` trait). Thread-safe; sorts at most once per
        (frame, sort); formats only the window."""
        sort_key = self._sort_key(self.sort if sort is None else sort)
        with self._lock:
            frame, version = self._frame, self._version
            changed, changed_at = self._changed, self._changed_at
        if frame is None:
            return _rows_message(version, sort_key, 0, [], [], 0.0, 0)
        order = self._ordering(frame, sort_key)
        start, positions = paging.page_positions(len(frame), order, start, count)
        rows = paging.format_page(frame, positions)
        marks, age = self._marks(changed, changed_at, positions)
        return _rows_message(version, sort_key, start, rows, marks, age, len(frame))

    def close(self) -> None:
        """Stop following the source, report visibility as unknown, close the comm."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(ValueError, KeyError):  # never observed: failed __init__
            self._source.unobserve(self._on_source_change, names=list(SOURCE_TRAITS))
        self._flusher.unregister(self)
        self._report(None)
        super().close()

    # ---- state built for the browser ------------------------------------------------

    def _collect(self, initial: bool = False) -> dict[str, Any]:
        """The source's latest state as trait values; recomputes the frame cache when
        the frame changed. Runs on the constructing thread, then on the flush thread."""
        src = self._source
        snapshot = getattr(src, "snapshot", None)  # LiveQuery: all fields of one update
        if callable(snapshot):
            df, status, error, updated_at, runs = snapshot()
        else:
            df, status, error = src.df, src.status, src.error
            updated_at, runs = src.updated_at, src.runs
        state: dict[str, Any] = {
            "name": str(getattr(src, "name", "") or ""),
            "status": str(status),
            "error": None if error is None else str(error),
            "updated_at": _iso(updated_at),
            "runs": int(runs),
        }
        with self._lock:
            previous = self._frame
            start, count = self._window_req
        if df is previous and not initial:
            return state
        key = getattr(src, "primary_key", None)
        changed = None if df is None else paging.changed_rows(previous, df, key)
        with self._lock:
            self._frame = df
            self._version += 1
            self._order, self._order_key = None, None
            self._changed, self._changed_at = changed, self._clock()
            version = self._version
        state["version"] = version
        state["total_rows"] = 0 if df is None else len(df)
        state["columns"] = [] if df is None else paging.column_kinds(df)
        sort = None if initial else self.sort
        state["window"] = self.page(start, count, sort=sort if sort is not None else [])
        return state

    def _flush(self) -> bool:
        """Push the latest state (flush thread only: the one writer of the traits);
        True when it carried a new frame."""
        with self._lock:
            if self._closed:
                return False
        self.visible_state()  # lazy visibility decay
        state = self._collect()
        self._push(state)
        return "version" in state

    def _push(self, state: dict[str, Any]) -> None:
        """Set the traits in one comm message. Tests wrap this to count pushes."""
        with self.hold_sync():
            for name, value in state.items():
                setattr(self, name, value)

    def _send_message(self, content: PythonMessage) -> None:
        """Send a custom message. Tests wrap this to capture replies."""
        self.send(content)

    # ---- handlers ---------------------------------------------------------------------

    def _on_source_change(self, _change: Any) -> None:
        # Any worker thread: only mark dirty; the flush thread does the rest.
        self._flusher.request(self)

    def _on_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        # Main thread or a kernel subshell thread, possibly during a flush.
        msg = parse_browser_message(content)  # None (logged at debug): ignored
        if msg is None:
            return
        try:
            if msg["type"] == "page":
                self._on_page_request(msg)
            elif msg["type"] == "heartbeat" and self._alive():
                self._report(self.visible)
        except Exception:
            logger.exception("live table %r: browser message %r failed", self.name, content)

    def _on_page_request(self, msg: PageRequest) -> None:
        self._alive()
        page = self.page(msg.get("start", 0), msg.get("count", self.page_size), msg.get("sort"))
        reply: RowsReply = {**page, "seq": msg.get("seq")}
        with self._lock:
            self._window_req = (page["start"], max(1, msg.get("count", 1)))
        self._send_message(reply)

    def _on_visible(self, change: Any) -> None:
        with self._lock:
            self._last_report = self._clock()
            self._decayed = False
        self._report(change["new"])

    def _alive(self) -> bool:
        """A browser message proves a view is alive: refresh the visibility report's age.
        Returns whether visibility was ever reported."""
        with self._lock:
            if self._last_report is None:
                return False
            self._last_report = self._clock()
            self._decayed = False
            return True

    def _report(self, visible: bool | None) -> None:
        try:
            self._source.set_visible(self._token, visible)
        except Exception:
            logger.exception("live table %r: set_visible failed", self.name)

    # ---- sort cache -------------------------------------------------------------------

    def _sort_key(self, sort: Sequence[Any] | None) -> tuple[str, bool] | None:
        if not sort or len(sort) < 1 or not isinstance(sort[0], str):
            return None
        ascending = bool(sort[1]) if len(sort) > 1 else True
        return (sort[0], ascending)

    def _ordering(
        self, frame: pd.DataFrame, sort_key: tuple[str, bool] | None
    ) -> npt.NDArray[np.intp] | None:
        """Positions of `frame` in `sort_key` order (None: frame order), cached."""
        if sort_key is None:
            return None
        column = paging.column_position(frame, sort_key[0])
        if column is None:
            return None
        cache_key = (id(frame), sort_key)
        with self._sort_lock:
            with self._lock:
                if self._frame is frame and self._order_key == cache_key:
                    return self._order
            order = paging.sort_order(frame, column, sort_key[1])
            with self._lock:
                if self._frame is frame:
                    self._order, self._order_key = order, cache_key
        return order

    def _marks(
        self,
        changed: npt.NDArray[np.bool_] | None,
        changed_at: float,
        positions: paging.Positions,
    ) -> tuple[list[int], float]:
        """Indices within the page of rows changed by the last refresh, and its age (ms)."""
        age = self._clock() - changed_at
        if changed is None or age > HIGHLIGHT_SECONDS:
            return [], 0.0
        flags = changed[positions]
        return [int(i) for i in flags.nonzero()[0]], round(age * 1000.0, 1)


def _rows_message(
    version: int,
    sort_key: tuple[str, bool] | None,
    start: int,
    rows: list[list[Cell]],
    changed: list[int],
    age_ms: float,
    total: int,
) -> RowsMessage:
    return {
        "type": "rows",
        "version": version,
        "sort": [] if sort_key is None else [sort_key[0], sort_key[1]],
        "start": start,
        "rows": rows,
        "changed": changed,
        "changed_age_ms": age_ms,
        "total": total,
    }


def _iso(value: Any) -> str | None:
    """A timestamp as ISO 8601 with its offset; naive datetimes are taken as UTC."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return str(value.isoformat())
    return str(value)
