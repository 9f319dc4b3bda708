"""`LiveTable`: the anywidget that shows a live query and keeps itself current.

The browser never receives a whole frame: it asks for the rows it shows (custom message
`{"type": "page", "start", "count", "seq", "sort", "search"}`) and gets only those back
(`{"type": "rows", ...}`); the synced state carries the header, the status and one
window of rows. Sorting and searching happen in Python over the whole frame (`rows.py`
caches the orderings): the search box sends `{"type": "search", "query"}` (debounced),
and the flush thread pushes the applied `search`, the number of `matched_rows` and their
first window. Each message kind is a TypedDict in `messages.py`; incoming ones are parsed
into their type before they are dispatched. Source changes arrive on worker threads and
reach the browser through the shared flush thread (`flush.py`): one writer per widget,
coalesced, throttled.
Browser messages may be handled on a kernel subshell thread, concurrently with a flush:
the table's fields are guarded by `_lock` (the frame's by `TableRows`), never held while
sending.

Visibility reports and their decay: `visibility.py`. Where no widget runs (nbconvert,
GitHub), the display falls back to a static HTML snapshot: `static.py`.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import anywidget
import traitlets

from reactive_nb.ui.widgets import paging, static
from reactive_nb.ui.widgets.flush import SHARED, Flusher
from reactive_nb.ui.widgets.messages import (
    Column,
    PageRequest,
    PythonMessage,
    RowsMessage,
    RowsReply,
    SearchRequest,
    parse_browser_message,
)
from reactive_nb.ui.widgets.rows import HIGHLIGHT_SECONDS, TableRows, sort_key
from reactive_nb.ui.widgets.source import SOURCE_TRAITS, TableSource, iso
from reactive_nb.ui.widgets.visibility import VisibilityAge

logger = logging.getLogger(__name__)

_HERE = pathlib.Path(__file__).parent


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
        self._flusher = SHARED if flusher is None else flusher
        clock = self._flusher.clock
        self._token = f"widget-{uuid.uuid4().hex}"
        # Guards the fields below. Held for field reads/writes only: never while
        # sorting, diffing, formatting or sending.
        self._lock = threading.Lock()
        self._rows = TableRows(clock)  # the frame shown, and windows of it
        self._search = ""  # the search applied (the `search` trait follows it)
        self._search_wanted = ""  # the last one the browser asked for
        self._window_req = (0, page_size)
        self._visibility = VisibilityAge(clock)
        self._closed = False

        state = self._collect(initial=True)
        state["page_size"], state["height"] = page_size, height
        super().__init__(**state, **kwargs)
        self.on_msg(self.handle_message)
        self.observe(self._on_visible, names=["visible"])
        self._flusher.register(self)
        source.observe(self._on_source_change, names=list(SOURCE_TRAITS))
        if source.df is not self._rows.frame or source.status != state["status"]:
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
        value = self.visible
        known, decays = self._visibility.check()
        if decays:
            self._report(None)
        if not known:
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
        key = sort_key(self.sort if sort is None else sort)
        with self._lock:
            query = self._search if search is None else search
        return self._rows.page(start, count, key, query)

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
            "updated_at": iso(updated_at),
            "runs": int(runs),
        }
        previous = self._rows.frame
        with self._lock:
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
        state["version"] = self._rows.replace(df, getattr(src, "primary_key", None))
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

    def handle_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """What the comm calls with each custom message from the browser (registered with
        ``on_msg``): a page request, a search or a heartbeat. Never raises: a malformed
        message is dropped (logged at debug), a failing one is logged."""
        # Main thread or a kernel subshell thread, possibly during a flush.
        msg = parse_browser_message(content)  # None (logged at debug): ignored
        if msg is None:
            return
        try:
            if msg["type"] == "page":
                self._on_page_request(msg)
            elif msg["type"] == "search":
                self._on_search(msg)
            elif msg["type"] == "heartbeat" and self._visibility.alive():
                self._report(self.visible)
        except Exception:
            logger.exception("live table %r: browser message %r failed", self.name, content)

    def _on_page_request(self, msg: PageRequest) -> None:
        self._visibility.alive()
        page = self.page(msg.get("start", 0), msg.get("count", self.page_size), msg.get("sort"),
                         msg.get("search"))
        reply: RowsReply = {**page, "seq": msg.get("seq")}
        with self._lock:
            self._window_req = (page["start"], max(1, msg.get("count", 1)))
        self._send_message(reply)

    def _on_search(self, msg: SearchRequest) -> None:
        # Like a source change: record what is wanted, the flush thread computes and pushes
        # it (one writer; a burst of keystrokes that got past the debounce is coalesced).
        self._visibility.alive()
        with self._lock:
            self._search_wanted = msg["query"]
        self._flusher.request(self)

    def _on_visible(self, change: Any) -> None:
        self._visibility.reported()
        self._report(change["new"])

    def _report(self, visible: bool | None) -> None:
        try:
            self._source.set_visible(self._token, visible)
        except Exception:
            logger.exception("live table %r: set_visible failed", self.name)

    # ---- display where no widget runs ----------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget view, plus the static HTML snapshot (`static.py`)."""
        return static.with_static_html(super()._repr_mimebundle_(**kwargs), self.static_html)

    def static_html(self, rows: int = static.STATIC_ROWS) -> str:
        """A self-contained HTML snapshot: the name, status, "updated at", the row count
        and the first `rows` rows in the current sort and search."""
        window = self.page(0, rows)
        columns = [c["name"] for c in self.columns]
        count = f"{self.total_rows:,} rows"
        if window["search"]:
            count = f"{window['total']:,} of {self.total_rows:,} rows matching " \
                    f"{window['search']!r}"
        return static.static_card(self.name, self.status, self.error, self.updated_at, count,
                                  columns, static.rows_html(window["rows"]),
                                  shown=len(window["rows"]), total=window["total"])


def _checked_size(page_size: int, height: int | None) -> tuple[int, int | None]:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise ValueError(f"page_size must be a positive integer, not {page_size!r}")
    if height is not None and (isinstance(height, bool) or not isinstance(height, int)
                               or height < 1):
        raise ValueError(f"height must be a positive number of pixels or None, not {height!r}")
    return page_size, height
