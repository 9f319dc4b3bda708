"""`LiveValue`: a KPI number that follows a live query and flashes when it changes.

`live.value("count", label="Messages")` shows the row count; `live.value("open")` shows
the first row's ``open`` column. Like the live table, it never writes its traits from a
worker thread: the source's observer marks it dirty and the shared flush thread (the one
writer, `flush.py`) pushes the latest state. `SourceFollower` is that wiring, shared with
`LiveChart`.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import threading
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

from reactive_nb.ui.widgets import static
from reactive_nb.ui.widgets.flush import SHARED, Flusher
from reactive_nb.ui.widgets.source import SOURCE_TRAITS, iso

if TYPE_CHECKING:
    from reactive_nb.ui.widgets.source import TableSource

logger = logging.getLogger(__name__)

_HERE = pathlib.Path(__file__).parent

#: ``live.value(COUNT)`` shows the number of rows.
COUNT = "count"


class SourceFollower(anywidget.AnyWidget):
    """An anywidget whose synced state is derived from a live query's latest frame.

    Subclasses implement `_state(df, status, error, updated_at)` (trait values) and set
    ``_frame_traits`` (the traits that change only with a new frame). Pushes go through
    `flusher` (default: the live tables' shared flush thread).
    """

    name = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Unicode("loading").tag(sync=True)
    error = traitlets.Unicode(None, allow_none=True).tag(sync=True)
    updated_at = traitlets.Unicode(None, allow_none=True).tag(sync=True)

    def __init__(self, source: TableSource, *, flusher: Flusher | None = None,
                 **kwargs: Any) -> None:
        self._source = source
        self._flusher = SHARED if flusher is None else flusher
        self._lock = threading.Lock()  # guards _frame and _closed; never held while pushing
        self._frame: Any = None
        self._closed = False
        df, status, error, updated_at = self._read()
        self._frame = df
        state = self._state(df, status, error, updated_at)
        super().__init__(**state, **kwargs)
        self._flusher.register(self)
        source.observe(self._on_source_change, names=list(SOURCE_TRAITS))
        if source.df is not df or source.status != state["status"]:
            self._flusher.request(self)  # changed while we were being built

    @property
    def source(self) -> TableSource:
        return self._source

    def _read(self) -> tuple[Any, str, str | None, Any]:
        snapshot = getattr(self._source, "snapshot", None)
        if callable(snapshot):
            df, status, error, updated_at, _runs = snapshot()
        else:
            src = self._source
            df, status, error, updated_at = src.df, src.status, src.error, src.updated_at
        return df, str(status), None if error is None else str(error), updated_at

    def _common(self, status: str, error: str | None, updated_at: Any) -> dict[str, Any]:
        return {"name": str(getattr(self._source, "name", "") or ""), "status": status,
                "error": error, "updated_at": iso(updated_at)}

    def _state(self, df: Any, status: str, error: str | None,
               updated_at: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _on_source_change(self, _change: Any) -> None:
        self._flusher.request(self)  # any worker thread: only mark dirty

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget view, plus the static HTML snapshot (`static.py`)."""
        return static.with_static_html(super()._repr_mimebundle_(**kwargs), self.static_html)

    def static_html(self) -> str:
        """A static HTML snapshot: name, status, "updated at" and the first rows."""
        with self._lock:
            df = self._frame
        columns, body, shown, total = static.frame_rows_html(df, self._static_columns())
        return static.static_card(self.name, self.status, self.error, self.updated_at,
                                  f"{total:,} rows", columns, body, shown=shown, total=total)

    def _static_columns(self) -> list[str] | None:
        """The columns the snapshot shows (None: all)."""
        return None

    def _flush(self) -> bool:
        """Push the latest state (flush thread only); True when it carried a new frame."""
        with self._lock:
            if self._closed:
                return False
            previous = self._frame
        df, status, error, updated_at = self._read()
        state = self._state(df, status, error, updated_at)
        with self._lock:
            self._frame = df
        with self.hold_sync():
            for name, value in state.items():
                if getattr(self, name) != value:
                    setattr(self, name, value)
        return df is not previous

    def close(self) -> None:
        if not hasattr(self, "_lock"):  # __init__ refused its arguments: nothing to undo
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(ValueError, KeyError):
            self._source.unobserve(self._on_source_change, names=list(SOURCE_TRAITS))
        self._flusher.unregister(self)
        super().close()


class LiveValue(SourceFollower):
    """One number of a live query: a column of its first row, or its row count."""

    _esm = _HERE / "value.js"
    _css = _HERE / "value.css"

    label = traitlets.Unicode("").tag(sync=True)
    text = traitlets.Unicode("").tag(sync=True)
    value = traitlets.Any(None, allow_none=True).tag(sync=True)

    def __init__(self, source: TableSource, column: str = COUNT, *, label: str | None = None,
                 format: str = "{:,}", flusher: Flusher | None = None, **kwargs: Any) -> None:
        self.column = column
        self.format = format
        super().__init__(source, flusher=flusher, label=label or column, **kwargs)

    def _state(self, df: Any, status: str, error: str | None,
               updated_at: Any) -> dict[str, Any]:
        state = self._common(status, error, updated_at)
        value = self._pick(df)
        state["value"] = value
        state["text"] = "-" if value is None else self._format(value)
        return state

    def static_html(self) -> str:
        """A static HTML snapshot: the label, the number, status and "updated at"."""
        return static.static_card(self.name, self.status, self.error, self.updated_at,
                                  f"{self.label}: {self.text}", [], "", shown=0, total=0)

    def _pick(self, df: Any) -> Any:
        if df is None:
            return None
        if self.column == COUNT and COUNT not in df.columns:
            return len(df)
        if self.column not in df.columns:
            raise KeyError(f"{self.name}: no column {self.column!r} (columns: "
                           f"{', '.join(map(str, df.columns))})")
        if len(df) == 0:
            return None
        raw = df[self.column].iloc[0]
        item = getattr(raw, "item", None)  # numpy scalar -> Python
        value = item() if callable(item) else raw
        if value != value:  # NaN
            return None
        return value if isinstance(value, int | float | str | bool) else str(value)

    def _format(self, value: Any) -> str:
        try:
            return self.format.format(value)
        except (ValueError, TypeError):
            return str(value)
