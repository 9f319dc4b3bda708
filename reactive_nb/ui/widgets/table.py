"""`LiveTable`: the anywidget that shows a live query and keeps itself current.

The browser never receives a whole frame: it asks for the rows it shows (custom message
`{"type": "page", "start", "count", "seq", "sort", "search"}`) and gets only those back
(`{"type": "rows", ...}`); the synced state carries the header, the status and one
window of rows. Sorting and searching happen in Python over the whole frame: the search
box sends `{"type": "search", "query"}` (debounced), and the flush thread pushes the
applied `search`, the number of `matched_rows` and their first window. Each message
kind is a TypedDict in `messages.py`; incoming ones are parsed into their type before
they are dispatched. Source changes arrive on worker threads and reach the browser
through the shared flush thread (`flush.py`): one writer per widget, coalesced,
throttled.
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
import html
import logging
import pathlib
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

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
    SearchRequest,
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

_ViewKey: TypeAlias = "tuple[tuple[str, bool] | None, str]"
"""(sort, search) of a cached ordering of the current frame."""

STATIC_ROWS = 10
"""Rows of the static HTML snapshot shown where no widget can run (nbconvert, GitHub)."""
VIEW_CACHE = 8
"""(sort, search) orderings kept per frame: a few searches typed in a row stay cached."""

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
    #: Height of the scroll box in pixels; None: as many rows as there are, up to 15.
    height = traitlets.Int(None, allow_none=True).tag(sync=True)
    #: The search applied (written by the flush thread; the browser sends a message).
    search = traitlets.Unicode("").tag(sync=True)
    #: Rows matching `search` (`total_rows` when there is none).
    matched_rows = traitlets.Int(0).tag(sync=True)
    highlight_ms = traitlets.Int(int(HIGHLIGHT_SECONDS * 1000)).tag(sync=True)
    # Browser -> Python (never written by Python).
    sort: traitlets.List[Any] = traitlets.List().tag(sync=True)
    visible = traitlets.Bool(None, allow_none=True).tag(sync=True)

    def __init__(
        self,
        source: TableSource,
        page_size: int = 50,
        *,
        height: int | None = None,
        flusher: Flusher | None = None,
        **kwargs: Any,
    ) -> None:
        """`page_size`: rows per page request (and of the first window); `height`: of the
        scroll box in pixels (None: fits up to 15 rows). `flusher`: the one writer that
        pushes this table's changes (default: the shared flush thread). Tests pass a
        `Flusher(clock=..., threaded=False)` and step it; its clock is also the table's
        (highlight ages, visibility decay)."""
        page_size, height = _checked_size(page_size, height)
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
        # Orderings of `_frame` by (sort, search): positions of the rows shown, in order.
        self._views: dict[_ViewKey, npt.NDArray[np.intp]] = {}
        self._search = ""  # the search applied (the `search` trait follows it)
        self._search_wanted = ""  # the last one the browser asked for
        self._changed: npt.NDArray[np.bool_] | None = None
        self._changed_at = 0.0
        self._window_req = (0, page_size)
        self._last_report: float | None = None
        self._decayed = False
        self._closed = False

        state = self._collect(initial=True)
        state["page_size"], state["height"] = page_size, height
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

    def configure(self, *, page_size: int | None = None, height: int | None = None) -> None:
        """Change the rows per page and the height (pixels; None: fit up to 15 rows)."""
        size, tall = _checked_size(self.page_size if page_size is None else page_size, height)
        with self._lock:
            self._window_req = (self._window_req[0], size)
        with self.hold_sync():
            self.page_size, self.height = size, tall

    def page(self, start: int, count: int, sort: Sequence[Any] | None = None,
             search: str | None = None) -> RowsMessage:
        """The `rows` payload for the window [start, start+count) of the rows matching
        `search` (default: the search applied) in `sort` order (default: the current
        `sort` trait). Thread-safe; sorts and searches at most once per (frame, sort,
        search); formats only the window."""
        sort_key = self._sort_key(self.sort if sort is None else sort)
        with self._lock:
            frame, version = self._frame, self._version
            changed, changed_at = self._changed, self._changed_at
            query = self._search if search is None else search
        if frame is None:
            return _rows_message(version, sort_key, query, 0, [], [], 0.0, 0)
        order = self._ordering(frame, sort_key, query)
        total = len(frame) if order is None else len(order)
        start, positions = paging.page_positions(total, order, start, count)
        rows = paging.format_page(frame, positions)
        marks, age = self._marks(changed, changed_at, positions)
        return _rows_message(version, sort_key, query, start, rows, marks, age, total)

    def close(self) -> None:
        """Stop following the source, report visibility as unknown, close the comm."""
        if not hasattr(self, "_lock"):  # __init__ refused its arguments: nothing to undo
            return
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
            searched = self._search_wanted != self._search
            self._search = self._search_wanted
            query = self._search
        if searched:
            start = 0  # a new search starts at its first match
            with self._lock:
                self._window_req = (0, count)
        if df is previous and not initial:
            if searched:
                window = self.page(start, count, sort=self.sort, search=query)
                state.update(search=query, matched_rows=window["total"], window=window)
            return state
        key = getattr(src, "primary_key", None)
        changed = None if df is None else paging.changed_rows(previous, df, key)
        with self._lock:
            self._frame = df
            self._version += 1
            self._views = {}
            self._changed, self._changed_at = changed, self._clock()
            version = self._version
        state["version"] = version
        state["total_rows"] = 0 if df is None else len(df)
        state["columns"] = [] if df is None else paging.column_kinds(df)
        sort = None if initial else self.sort
        window = self.page(start, count, sort=sort if sort is not None else [], search=query)
        state.update(search=query, matched_rows=window["total"], window=window)
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
            elif msg["type"] == "search":
                self._on_search(msg)
            elif msg["type"] == "heartbeat" and self._alive():
                self._report(self.visible)
        except Exception:
            logger.exception("live table %r: browser message %r failed", self.name, content)

    def _on_page_request(self, msg: PageRequest) -> None:
        self._alive()
        page = self.page(msg.get("start", 0), msg.get("count", self.page_size), msg.get("sort"),
                         msg.get("search"))
        reply: RowsReply = {**page, "seq": msg.get("seq")}
        with self._lock:
            self._window_req = (page["start"], max(1, msg.get("count", 1)))
        self._send_message(reply)

    def _on_search(self, msg: SearchRequest) -> None:
        # Like a source change: record what is wanted, the flush thread computes and pushes
        # it (one writer; a burst of keystrokes that got past the debounce is coalesced).
        self._alive()
        with self._lock:
            self._search_wanted = msg["query"]
        self._flusher.request(self)

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
        self, frame: pd.DataFrame, sort_key: tuple[str, bool] | None, search: str = ""
    ) -> npt.NDArray[np.intp] | None:
        """Positions of the rows of `frame` matching `search`, in `sort_key` order
        (None: every row, in frame order), cached per (frame, sort, search)."""
        import numpy as np

        column = None if sort_key is None else paging.column_position(frame, sort_key[0])
        if column is None:
            sort_key = None
        if sort_key is None and not search:
            return None
        with self._sort_lock:
            view = self._cached_view(frame, (sort_key, search))
            if view is not None:
                return view
            if sort_key is None:
                order = None
            else:
                order = self._cached_view(frame, (sort_key, ""))
                if order is None:
                    assert column is not None
                    order = paging.sort_order(frame, column, sort_key[1])
                    self._keep_view(frame, (sort_key, ""), order)
            if search:
                mask = paging.search_mask(frame, search)
                order = np.flatnonzero(mask) if order is None else order[mask[order]]
                self._keep_view(frame, (sort_key, search), order)
        return order

    def _cached_view(self, frame: pd.DataFrame, key: _ViewKey) -> npt.NDArray[np.intp] | None:
        with self._lock:
            return self._views.get(key) if self._frame is frame else None

    def _keep_view(self, frame: pd.DataFrame, key: _ViewKey,
                   order: npt.NDArray[np.intp]) -> None:
        with self._lock:
            if self._frame is not frame:
                return
            self._views[key] = order
            while len(self._views) > VIEW_CACHE:  # the oldest first (dicts keep order)
                del self._views[next(iter(self._views))]

    # ---- display where no widget runs ----------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget view, plus a static HTML snapshot for renderers without a widget
        manager: nbconvert uses the widget view only when the widget state was saved
        with the notebook, and GitHub never does, so both show the `text/html`."""
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle  # (data, metadata)
        if isinstance(data, dict):
            with contextlib.suppress(Exception):  # a display must not fail on a snapshot
                data["text/html"] = self.static_html()
        return bundle

    def static_html(self, rows: int = STATIC_ROWS) -> str:
        """A self-contained HTML snapshot: the name, status, "updated at", the row count
        and the first `rows` rows in the current sort and search."""
        window = self.page(0, rows)
        columns = [c["name"] for c in self.columns]
        count = f"{self.total_rows:,} rows"
        if window["search"]:
            count = f"{window['total']:,} of {self.total_rows:,} rows matching " \
                    f"{window['search']!r}"
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(paging.display_text(v))}</td>" for v in row)
            + "</tr>" for row in window["rows"])
        return static_card(self.name, self.status, self.error, self.updated_at, count,
                           columns, body, shown=len(window["rows"]), total=window["total"])

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


def _checked_size(page_size: int, height: int | None) -> tuple[int, int | None]:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise ValueError(f"page_size must be a positive integer, not {page_size!r}")
    if height is not None and (isinstance(height, bool) or not isinstance(height, int)
                               or height < 1):
        raise ValueError(f"height must be a positive number of pixels or None, not {height!r}")
    return page_size, height


def frame_rows_html(df: Any, columns: Sequence[str] | None = None,
                    rows: int = STATIC_ROWS) -> tuple[list[str], str, int, int]:
    """(column names, ``<tr>`` rows, rows shown, rows in all) of the first `rows` rows
    of `df` (only `columns` when given and present), for `static_card`."""
    if df is None:
        return [], "", 0, 0
    if columns is not None:
        picked = [j for j, c in enumerate(df.columns) if str(c) in set(columns)]
        df = df.iloc[:, picked]
    positions = slice(0, min(rows, len(df)))
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(paging.display_text(v))}</td>" for v in row)
        + "</tr>" for row in paging.format_page(df, positions))
    return [str(c) for c in df.columns], body, min(rows, len(df)), len(df)


def static_card(name: str, status: str, error: str | None, updated_at: str | None,
                summary: str, columns: Sequence[str], body: str, *, shown: int,
                total: int) -> str:
    """The static snapshot's HTML (inline styles only: GitHub strips classes and CSS)."""
    esc = html.escape
    when = f"updated at {esc(updated_at)}" if updated_at else "not updated yet"
    problem = f" &middot; {esc(error)}" if status == "error" and error else ""
    head = "".join(f"<th style=\"text-align:left\">{esc(c)}</th>" for c in columns)
    more = (f"<p><small>first {shown:,} of {total:,} rows; a static snapshot: run the "
            "notebook for the live table</small></p>") if total > shown else ""
    table = (f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
             if columns else "")
    return (f"<div class=\"rnb-static\" data-status=\"{esc(status)}\">"
            f"<p><strong>{esc(name)}</strong> &middot; {esc(summary)} &middot; "
            f"<code>{esc(status)}</code>{problem} &middot; {when}</p>{table}{more}</div>")


def _rows_message(
    version: int,
    sort_key: tuple[str, bool] | None,
    search: str,
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
        "search": search,
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
