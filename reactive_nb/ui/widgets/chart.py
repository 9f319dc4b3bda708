"""`LiveChart`: a line, bar or area chart of a live query that redraws itself.

`live.chart(x="day", y="messages", color="channel", kind="line")`. Python turns the
frame into a few series of points (at most `max_points` per series, the last ones) and
the browser draws them as SVG with the code in `chart.js`: no chart library, nothing
fetched from a CDN, so it works offline in JupyterLab and Voila. New frames arrive from
the worker threads and reach the browser through the shared flush thread, like the
live table's: one writer, coalesced, throttled.

Why not plotly: its `FigureWidget` is an anywidget since v6 and bundles its JavaScript,
so it works offline too, but every figure ships that bundle (about 5 MB) in its widget
state and builds in ~2.5 s; a dashboard of a few charts would send tens of MB to every
viewer. A live chart needs lines, bars and areas redrawn from a small series: ~200 lines
of JS.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any

import traitlets

from reactive_nb.ui.widgets.value import SourceFollower

if TYPE_CHECKING:
    import pandas as pd

    from reactive_nb.ui.widgets.flush import Flusher
    from reactive_nb.ui.widgets.source import TableSource

_HERE = pathlib.Path(__file__).parent

KINDS = ("line", "bar", "area")
MAX_SERIES = 12


class LiveChart(SourceFollower):
    """A chart of a live query's frame: one series per ``y`` column, or per value of
    ``color`` (then ``y`` is one column)."""

    _esm = _HERE / "chart.js"
    _css = _HERE / "chart.css"

    kind = traitlets.Unicode("line").tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    x_label = traitlets.Unicode("").tag(sync=True)
    y_label = traitlets.Unicode("").tag(sync=True)
    #: "time" (x in epoch ms), "number" or "category" (x as text).
    x_kind = traitlets.Unicode("number").tag(sync=True)
    series: traitlets.List[Any] = traitlets.List().tag(sync=True)
    height = traitlets.Int(260).tag(sync=True)

    def __init__(self, source: TableSource, *, x: str, y: str | list[str],
                 color: str | None = None, kind: str = "line", title: str | None = None,
                 height: int = 260, max_points: int = 500, flusher: Flusher | None = None,
                 **kwargs: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        ys = [y] if isinstance(y, str) else list(y)
        if not ys:
            raise ValueError("y names no column")
        if color is not None and len(ys) != 1:
            raise ValueError("with color=..., y must be one column")
        self.x, self.ys, self.color, self.max_points = x, ys, color, max(2, int(max_points))
        super().__init__(source, flusher=flusher, kind=kind, height=int(height),
                         title=title if title is not None else "",
                         x_label=x, y_label=ys[0] if len(ys) == 1 else "", **kwargs)

    def _static_columns(self) -> list[str] | None:
        """The snapshot shows the plotted columns of the first rows."""
        return [self.x, *([self.color] if self.color else []), *self.ys]

    def _state(self, df: Any, status: str, error: str | None,
               updated_at: Any) -> dict[str, Any]:
        state = self._common(status, error, updated_at)
        if df is not None:
            state["x_kind"], state["series"] = chart_series(
                df, self.x, self.ys, self.color, self.max_points,
                parse_times=self.kind != "bar")
        return state


def chart_series(df: pd.DataFrame, x: str, ys: list[str], color: str | None,
                 max_points: int, *, parse_times: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """``(x_kind, series)`` of a frame: each series ``{"name", "points": [[x, y], ...]}``,
    sorted by x (numbers and times), nulls dropped, the last ``max_points`` kept. Text
    that reads as ISO times is a time axis when ``parse_times`` (bars keep it as labels:
    one bar group per value, however far apart)."""
    import pandas as pd

    missing = [c for c in [x, *ys, *([color] if color else [])] if c not in df.columns]
    if missing:
        raise KeyError(f"no column {', '.join(map(repr, missing))} (columns: "
                       f"{', '.join(map(str, df.columns))})")
    column = df[x]
    if pd.api.types.is_datetime64_any_dtype(column):
        kind = "time"
        xs: pd.Series[Any] = _epoch_ms(column)
    elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        kind, xs = "number", column.astype("float64")
    else:
        parsed = _maybe_times(column) if parse_times else None
        if parsed is not None:
            kind, xs = "time", parsed
        else:
            kind, xs = "category", column.astype(str)
    frame = pd.DataFrame({"x": xs.to_numpy()})
    groups: list[tuple[str, pd.DataFrame]] = []
    if color is None:
        for y in ys:
            groups.append((y, frame.assign(y=pd.to_numeric(df[y], errors="coerce").to_numpy())))
    else:
        values = pd.to_numeric(df[ys[0]], errors="coerce").to_numpy()
        keyed = frame.assign(y=values, c=df[color].astype(str).to_numpy())
        for name in sorted(keyed["c"].unique())[:MAX_SERIES]:
            groups.append((str(name), keyed[keyed["c"] == name]))
    series = []
    for name, part in groups:
        part = part.dropna(subset=["x", "y"])
        if kind != "category":
            part = part.sort_values("x", kind="stable")
        part = part.tail(max_points)
        points = [[_plain(a), _plain(b)] for a, b in zip(part["x"], part["y"], strict=True)]
        series.append({"name": name, "points": points})
    return kind, series


def _epoch_ms(column: pd.Series[Any]) -> pd.Series[Any]:
    import pandas as pd

    times = pd.to_datetime(column, utc=True)
    millis: pd.Series[Any] = (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    return millis


def _maybe_times(column: pd.Series[Any]) -> pd.Series[Any] | None:
    """Text that is all ISO dates or times (SQLite returns them as text), as epoch ms."""
    import pandas as pd

    sample = column.dropna().head(20)
    if len(sample) == 0 or not all(isinstance(v, str) and v[:4].isdigit() and "-" in v
                                   for v in sample):
        return None
    try:
        return _epoch_ms(pd.to_datetime(column, format="ISO8601"))
    except (ValueError, TypeError):
        return None


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else value
