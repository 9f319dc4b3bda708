"""LiveTable at the Python level (no browser, no kernel: ipywidgets uses a dummy comm).

Covers the page logic on a 1,000,000-row frame (payload size, one sort per frame),
sorting, cell formatting, changed-row diffs, the typed browser messages, throttled and
coalesced pushes, thread-safe page handling and visibility reporting with lazy decay.

Time is a `FakeClock`: pushes go through a `Flusher(clock=..., threaded=False)` stepped
with `flush_due()`, so a test says what is pushed at which instant, with no sleeps and
no timing bounds (push latency and page times are measured in benchmarks/bench_widget.py).
Tests of the real flush thread synchronise on events, with timeouts.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import traitlets

from reactive_nb.ui.widgets import LiveTable, messages, paging, stop_flush_thread
from reactive_nb.ui.widgets.flush import THREAD_NAME, Flusher

N_BIG = 1_000_000
STATE_LIMIT = 64 * 1024
WAIT = 10.0
"""Timeout of every event wait: a bound on a hang, never a timing assertion."""
INTERVAL = 0.1


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StandIn(traitlets.HasTraits):
    """The traits of a LiveQuery, without a database (until the real one is used here)."""

    df = traitlets.Any(None, allow_none=True)
    status = traitlets.Unicode("loading")
    error = traitlets.Unicode(None, allow_none=True)
    updated_at = traitlets.Any(None, allow_none=True)
    runs = traitlets.Int(0)

    def __init__(
        self, name: str = "agents.getAll", primary_key: tuple[str, ...] | None = None, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.name = name
        self.primary_key = primary_key
        self.visibility: list[tuple[str, bool | None]] = []
        self._vis_lock = threading.Lock()

    def set_visible(self, token: str, visible: bool | None) -> None:
        with self._vis_lock:
            self.visibility.append((token, visible))


class Recording(LiveTable):
    """Counts pushes and captures replies by wrapping the widget's send paths."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.pushes: list[tuple[str, dict[str, Any]]] = []
        self.replies: list[dict[str, Any]] = []
        self.pushed = threading.Event()
        self.push_predicate: Any = None
        self.pushing = threading.Event()  # set when a push starts
        self.gate: threading.Event | None = None  # when set: pushes wait for it
        self._rec_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def _push(self, state: dict[str, Any]) -> None:
        self.pushing.set()
        if self.gate is not None:
            self.gate.wait(WAIT)
        super()._push(state)
        with self._rec_lock:
            self.pushes.append((threading.current_thread().name, state))
        if self.push_predicate is None or self.push_predicate(state):
            self.pushed.set()

    def _send_message(self, content: dict[str, Any]) -> None:
        with self._rec_lock:
            self.replies.append(content)

    def ask(self, start: int, count: int, sort: list[Any] | None = None) -> dict[str, Any]:
        """Send a page request through the browser-message handler; return the reply."""
        msg: dict[str, Any] = {"type": "page", "start": start, "count": count, "seq": 7}
        if sort is not None:
            msg["sort"] = sort
        self.handle_message(self, msg, [])
        with self._rec_lock:
            return self.replies[-1]


def wide_frame(n: int) -> pd.DataFrame:
    """n rows x 10 columns of mixed types (ints, floats, text, timestamps, bools)."""
    rng = np.random.default_rng(42)
    ids = np.arange(n, dtype=np.int64)
    return pd.DataFrame(
        {
            "id": ids,
            "org": pd.Series(np.where(ids % 3 == 0, "acme", "globex")),
            "name": pd.Series(ids).map("agent-{:07d}".format) if n <= 100_000 else ids.astype(str),
            "score": rng.random(n),
            "amount": rng.integers(0, 10_000, n),
            "ratio": rng.standard_normal(n),
            "created_at": pd.date_range("2024-01-01", periods=n, freq="s", tz="UTC"),
            "active": ids % 2 == 0,
            "level": rng.integers(0, 5, n),
            "note": pd.Series(np.where(ids % 7 == 0, None, "ok"), dtype=object),
        }
    )


@pytest.fixture(scope="module")
def big() -> pd.DataFrame:
    return wide_frame(N_BIG)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def flusher(clock: FakeClock) -> Flusher:
    """A flusher without a thread: the test pushes with `flush_due()` at `clock` times."""
    return Flusher(interval=INTERVAL, clock=clock, threaded=False)


@pytest.fixture
def tables() -> Iterator[list[LiveTable]]:
    """Widgets made by a test; closed afterwards (which stops the flush thread)."""
    made: list[LiveTable] = []
    yield made
    for w in made:
        w.close()
    stop_flush_thread()


def make(tables: list[LiveTable], source: StandIn, **kw: Any) -> Recording:
    """A recording table; pass `flusher=` to step its pushes (default: the flush thread)."""
    w = Recording(source, **kw)
    tables.append(w)
    return w


def ids(n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": range(n)})


# ---- paging on big frames ----------------------------------------------------------------


@pytest.mark.parametrize("n", [1_000, 100_000, N_BIG])
def test_initial_state_holds_only_the_first_page(
    n: int, big: pd.DataFrame, tables: list[LiveTable]
) -> None:
    df = big if n == N_BIG else big.iloc[:n].copy()
    w = make(tables, StandIn(df=df, status="fresh"), page_size=50)
    state = w.get_state()
    size = len(json.dumps(state, allow_nan=False))
    data = len(json.dumps({k: v for k, v in state.items() if k not in ("_esm", "_css")}))
    print(f"\n{n:>9} rows x 10 cols: initial state {size} B ({data} B without JS/CSS)")
    assert size <= STATE_LIMIT
    assert state["total_rows"] == n
    assert len(state["window"]["rows"]) == 50
    assert [c["name"] for c in state["columns"]][:3] == ["id", "org", "name"]
    assert state["window"]["rows"][0][0] == 0


def test_pages_of_a_million_rows_sort_once_per_frame(
    big: pd.DataFrame, tables: list[LiveTable], monkeypatch: pytest.MonkeyPatch
) -> None:
    # How fast a page is answered is measured in benchmarks/bench_widget.py (Widget 1);
    # here: what a page holds, and that the 1M-row ordering is computed once.
    w = make(tables, StandIn(df=big, status="fresh"))
    sorts = 0
    real_sort = paging.sort_order

    def counting_sort(*args: Any) -> Any:
        nonlocal sorts
        sorts += 1
        return real_sort(*args)

    monkeypatch.setattr(paging, "sort_order", counting_sort)
    for start in (0, 499_970, 999_940, 123_456, 765_432):
        reply = w.ask(start, 60)
        assert reply["start"] == start and len(reply["rows"]) == 60
        assert [r[0] for r in reply["rows"]] == list(range(start, start + 60))
        json.dumps(reply, allow_nan=False)
    reply = w.ask(500_000, 60, ["score", False])
    later = [w.ask(s, 60, ["score", False]) for s in (0, 250_000, 999_000)]
    assert sorts == 1  # the 1M-row ordering is computed once per (frame, sort)
    scores = [r[3] for r in reply["rows"]]
    assert scores == sorted(scores, reverse=True)
    assert reply["sort"] == ["score", False]
    assert all(len(r["rows"]) == 60 for r in later[:2]) and len(later[2]["rows"]) == 60


def test_page_is_clamped_to_the_frame(tables: list[LiveTable]) -> None:
    w = make(tables, StandIn(df=wide_frame(30), status="fresh"))
    assert w.ask(25, 100)["rows"][-1][0] == 29
    assert w.ask(25, 100)["start"] == 25
    assert w.ask(500, 10)["rows"] == []
    assert w.ask(-5, 3)["start"] == 0
    reply = w.ask(0, 10**9)
    assert len(reply["rows"]) == 30 and reply["seq"] == 7


# ---- typed browser messages --------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "parsed"),
    [
        (  # what table.js sends
            {"type": "page", "start": 40, "count": 60, "seq": 3, "sort": ["v", False]},
            {"type": "page", "start": 40, "count": 60, "seq": 3, "sort": ["v", False]},
        ),
        (  # a JavaScript number, and a null sort: the sort trait applies
            {"type": "page", "start": 40.0, "count": 60, "seq": None, "sort": None},
            {"type": "page", "start": 40, "count": 60, "seq": None},
        ),
        ({"type": "page", "sort": ["v"]}, {"type": "page", "sort": ["v", True]}),
        ({"type": "page", "sort": ["v", 0]}, {"type": "page", "sort": ["v", False]}),
        ({"type": "page", "sort": []}, {"type": "page", "sort": []}),
        ({"type": "page"}, {"type": "page"}),
        ({"type": "heartbeat", "extra": 1}, {"type": "heartbeat"}),
        ({"type": "search", "query": " Needle "}, {"type": "search", "query": "Needle"}),
        (
            {"type": "page", "start": 0, "count": 5, "search": "x"},
            {"type": "page", "start": 0, "count": 5, "search": "x"},
        ),
    ],
)
def test_browser_messages_parse_into_their_type(content: Any, parsed: Any) -> None:
    assert messages.parse_browser_message(content) == parsed


@pytest.mark.parametrize(
    "content",
    [
        None,
        ["page"],
        {},
        {"type": "resize"},
        {"type": "rows", "rows": []},
        {"type": "page", "start": "10", "count": 5},
        {"type": "page", "start": True, "count": 5},
        {"type": "page", "start": 0, "count": 1.5},
        {"type": "page", "start": float("nan"), "count": 5},
        {"type": "page", "start": 0, "count": 5, "seq": "7"},
        {"type": "page", "start": 0, "count": 5, "sort": "v"},
        {"type": "page", "start": 0, "count": 5, "sort": [1, True]},
        {"type": "page", "start": 0, "count": 5, "sort": ["v", "asc"]},
        {"type": "page", "start": 0, "count": 5, "sort": ["v", True, 1]},
        {"type": "search"},
        {"type": "search", "query": 3},
        {"type": "search", "query": "x" * 201},
        {"type": "page", "start": 0, "count": 5, "search": ["x"]},
    ],
)
def test_unknown_or_malformed_messages_are_dropped_quietly(
    content: Any, tables: list[LiveTable], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=messages.__name__):
        assert messages.parse_browser_message(content) is None
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    w = make(tables, StandIn(df=ids(3), status="fresh"))
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        w.handle_message(w, content, [])  # what the comm calls: never raises
    assert w.replies == []
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_replies_and_synced_state_carry_exactly_their_typed_fields(
    tables: list[LiveTable],
) -> None:
    w = make(tables, StandIn(df=ids(3), status="fresh"))
    reply = w.ask(1, 2, ["id", False])
    assert set(reply) == messages.RowsReply.__required_keys__
    assert reply["type"] == "rows" and reply["seq"] == 7 and reply["rows"] == [[1], [0]]
    assert set(w.window) == messages.RowsMessage.__required_keys__
    assert [set(c) for c in w.columns] == [messages.Column.__required_keys__]


# ---- sorting ------------------------------------------------------------------------------


def test_sorting_happens_in_python_with_nulls_last(tables: list[LiveTable]) -> None:
    df = pd.DataFrame({"id": [1, 2, 3, 4], "v": [2.0, None, 9.0, -1.0], "t": ["b", "a", None, "c"]})
    w = make(tables, StandIn(df=df, status="fresh"))
    assert [r[0] for r in w.ask(0, 10, ["v", True])["rows"]] == [4, 1, 3, 2]
    assert [r[0] for r in w.ask(0, 10, ["v", False])["rows"]] == [3, 1, 4, 2]
    assert [r[0] for r in w.ask(0, 10, ["t", True])["rows"]] == [2, 1, 4, 3]
    assert [r[0] for r in w.ask(0, 10, [])["rows"]] == [1, 2, 3, 4]
    assert [r[0] for r in w.ask(0, 10, ["nope", True])["rows"]] == [1, 2, 3, 4]
    # Without a sort in the request, the `sort` trait (set by the browser) applies.
    w.set_state({"sort": ["v", False]})
    assert [r[0] for r in w.ask(1, 2)["rows"]] == [1, 4]


def test_mixed_type_column_sorts_as_text(tables: list[LiveTable]) -> None:
    df = pd.DataFrame({"x": pd.Series([3, "b", 1, None], dtype=object)})
    w = make(tables, StandIn(df=df, status="fresh"))
    assert [r[0] for r in w.ask(0, 10, ["x", True])["rows"]] == [1, 3, "b", None]


# ---- formatting ------------------------------------------------------------------------------


def test_cells_are_formatted_readably_and_json_safe() -> None:
    long_text = "x" * 1000
    f = paging.format_cell
    assert f(None) is None and f(float("nan")) is None and f(pd.NaT) is None
    assert f(pd.NA) is None and f(np.float64("nan")) is None
    assert f(dt.date(2024, 5, 1)) == "2024-05-01"
    assert f(dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)) == "2024-05-01T12:30:00+00:00"
    assert f(pd.Timestamp("2024-05-01 12:30:05")) == "2024-05-01T12:30:05"
    assert f(np.datetime64("2024-05-01T00:00:00")) == "2024-05-01T00:00:00"
    assert f(decimal.Decimal("12345678901234567890.123456789")) == "12345678901234567890.123456789"
    assert f(decimal.Decimal("NaN")) is None
    assert f(np.int64(7)) == 7 and f(np.bool_(True)) is True
    assert f(2**60) == str(2**60)  # beyond JavaScript's exact integers
    assert f(float("inf")) == "inf"
    assert f(b"\x01\xff") == "0x01ff"
    cut = f(long_text)
    assert isinstance(cut, str) and len(cut) == paging.MAX_TEXT and cut.endswith("…")
    assert f({"a": [1, 2]}) == "{'a': [1, 2]}"


def test_page_formats_only_the_slice(tables: list[LiveTable]) -> None:
    df = pd.DataFrame(
        {
            "d": [dt.date(2024, 1, 2), None],
            "ts": pd.to_datetime(["2024-01-02 03:04:05", None]),
            "dec": [decimal.Decimal("1.10"), None],
            "i": pd.array([1, None], dtype="Int64"),
            "f": [1.5, float("nan")],
            "s": ["y" * 500, None],
        }
    )
    w = make(tables, StandIn(df=df, status="fresh"))
    rows = w.ask(0, 2)["rows"]
    assert rows[0][:5] == ["2024-01-02", "2024-01-02T03:04:05", "1.10", 1, 1.5]
    assert rows[0][5].endswith("…") and len(rows[0][5]) == paging.MAX_TEXT
    assert rows[1] == [None] * 6
    kinds = {c["name"]: c["kind"] for c in w.columns}
    assert kinds["ts"] == "datetime" and kinds["i"] == "number" and kinds["f"] == "number"
    json.dumps(rows, allow_nan=False)


# ---- changed rows ----------------------------------------------------------------------------


def test_diff_by_primary_key_ignores_shifted_rows() -> None:
    old = pd.DataFrame({"id": [1, 2, 3], "name": ["a", "b", "c"]})
    new = pd.DataFrame({"id": [9, 1, 2, 3], "name": ["new", "a", "B!", "c"]})  # insert on top
    mask = paging.changed_rows(old, new, ("id",))
    assert mask is not None and mask.tolist() == [True, False, True, False]


def test_diff_by_index_and_by_content() -> None:
    old = pd.DataFrame({"v": [1, 2, 3]}, index=["a", "b", "c"])
    new = pd.DataFrame({"v": [1, 5, 3, 4]}, index=["a", "b", "c", "d"])
    mask = paging.changed_rows(old, new, None)
    assert mask is not None and mask.tolist() == [False, True, False, True]
    # Default RangeIndex: positions are no identity, the row content is.
    old = pd.DataFrame({"v": [10, 20, 30]})
    new = pd.DataFrame({"v": [5, 10, 20, 30]})
    mask = paging.changed_rows(old, new, None)
    assert mask is not None and mask.tolist() == [True, False, False, False]
    # A key that is not in the frames falls back to the index/content rules.
    mask = paging.changed_rows(old, new, ("missing",))
    assert mask is not None and mask.tolist() == [True, False, False, False]


def test_diff_is_skipped_for_large_or_unhashable_frames() -> None:
    big = pd.DataFrame({"v": np.arange(paging.DIFF_MAX_ROWS)})
    assert paging.changed_rows(big, big.copy(), None) is None
    lists = pd.DataFrame({"v": [[1], [2]]})
    assert paging.changed_rows(lists, lists.copy(), None) is None
    assert paging.changed_rows(None, lists, None) is None


def test_refresh_marks_changed_rows_in_pushes_and_pages(
    tables: list[LiveTable], clock: FakeClock, flusher: Flusher
) -> None:
    src = StandIn(df=pd.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]}), primary_key=("id",))
    w = make(tables, src, flusher=flusher)
    assert w.window["changed"] == []  # first frame: nothing highlighted
    clock.advance(5.0)
    src.df = pd.DataFrame({"id": [0, 1, 2, 3], "v": ["z", "a", "b!", "c"]})
    assert flusher.flush_due() == 1
    state = w.pushes[-1][1]
    assert state["window"]["changed"] == [0, 2]
    assert state["window"]["changed_age_ms"] == 0.0  # pushed at the instant it changed
    # A later page request (sorted differently) marks the same rows by their new places,
    # with their age, until the highlight has faded.
    clock.advance(0.5)
    reply = w.ask(0, 4, ["id", False])
    assert reply["changed"] == [1, 3] and reply["changed_age_ms"] == 500.0
    clock.advance(1.01)
    assert w.ask(0, 4)["changed"] == []


# ---- search, page size, height ------------------------------------------------------------


def needles(n: int, every: int) -> pd.DataFrame:
    """n rows; the rows whose id is a multiple of `every` say "Needle" in their text."""
    ids = np.arange(n)
    text = np.where(ids % every == 0, "a Needle here", "hay")
    return pd.DataFrame({"id": ids, "text": text, "n": ids * 10})


def search(w: LiveTable, query: str) -> None:
    """What table.js sends, debounced, when the user types in the search box."""
    w.handle_message(w, {"type": "search", "query": query}, [])


def test_search_filters_the_whole_frame_in_python_through_the_flusher(
    tables: list[LiveTable], clock: FakeClock, flusher: Flusher
) -> None:
    src = StandIn(df=needles(1_000, 84), status="fresh")  # ids 0, 84, ..., 924: 12 rows
    w = make(tables, src, flusher=flusher, page_size=5)
    assert w.matched_rows == 1_000 and w.search == ""
    search(w, "needle")
    assert w.search == "" and w.pushes == []  # the flusher pushes, not the comm handler
    assert flusher.flush_due() == 1
    state = w.pushes[-1][1]
    assert state["search"] == "needle" and state["matched_rows"] == 12
    assert "version" not in state  # same frame: not re-sent, only the matches
    window = state["window"]
    assert window["search"] == "needle" and window["total"] == 12 and window["start"] == 0
    assert [r[0] for r in window["rows"]] == [0, 84, 168, 252, 336]
    # Pages come from the matches only, also beyond the rows the browser has seen.
    reply = w.ask(0, 100)
    assert [r[0] for r in reply["rows"]] == list(range(0, 1_000, 84))
    # Combined with sort: the matches, in sort order.
    w.sort = ["n", False]
    reply = w.ask(0, 3)
    assert [r[0] for r in reply["rows"]] == [924, 840, 756] and reply["total"] == 12
    # A refresh while searching: the count and the window follow the new frame.
    clock.advance(1.0)
    src.df = needles(1_100, 84)  # 1008 and 1092 match too
    assert flusher.flush_due() == 1
    state = w.pushes[-1][1]
    assert state["matched_rows"] == 14 and state["total_rows"] == 1_100
    assert [r[0] for r in state["window"]["rows"]] == [1092, 1008, 924]  # the last window asked
    # Clearing the search shows every row again.
    clock.advance(1.0)
    search(w, "")
    assert flusher.flush_due() == 1
    assert w.search == "" and w.matched_rows == 1_100 and w.window["total"] == 1_100


def test_search_matches_any_column_ignoring_case_and_nulls(tables: list[LiveTable]) -> None:
    df = pd.DataFrame({"id": [1, 2, 3, 4], "t": ["Acme", None, "x", "ACME inc"],
                       "v": [0.5, None, 12.0, 3.25]})
    w = make(tables, StandIn(df=df, status="fresh"))
    assert [r[0] for r in w.page(0, 10, search="acme")["rows"]] == [1, 4]
    assert [r[0] for r in w.page(0, 10, search="12")["rows"]] == [3]
    assert w.page(0, 10, search="none")["rows"] == []  # a null is not the text "None"
    assert w.page(0, 10, search="")["total"] == 4


def test_page_size_and_height(tables: list[LiveTable]) -> None:
    w = make(tables, StandIn(df=ids(100), status="fresh"), page_size=20, height=300)
    assert w.page_size == 20 and w.height == 300 and len(w.window["rows"]) == 20
    assert w.handle_message(w, {"type": "page", "seq": 1}, []) is None
    assert len(w.replies[-1]["rows"]) == 20  # a request without a count: one page
    w.configure(page_size=7)
    assert w.page_size == 7 and w.height is None
    with pytest.raises(ValueError, match="page_size"):
        LiveTable(StandIn(df=ids(3)), page_size=0)
    with pytest.raises(ValueError, match="height"):
        LiveTable(StandIn(df=ids(3)), height=-1)


def mime(widget: Any) -> dict[str, Any]:
    """The data of a widget's mime bundle (ipywidgets 8 returns (data, metadata))."""
    bundle = widget._repr_mimebundle_()
    data: dict[str, Any] = bundle[0] if isinstance(bundle, tuple) else bundle
    return data


def test_static_html_snapshot_next_to_the_widget_view(tables: list[LiveTable]) -> None:
    when = dt.datetime(2026, 11, 22, 10, 51, 47, tzinfo=dt.timezone.utc)
    src = StandIn(df=pd.DataFrame({"id": range(25), "name": [f"<b>{i}</b>" for i in range(25)]}),
                  status="fresh", updated_at=when)
    w = make(tables, src)
    data = mime(w)
    assert "application/vnd.jupyter.widget-view+json" in data
    page = data["text/html"]
    assert "agents.getAll" in page and "fresh" in page and "2026-11-22T10:51:47" in page
    assert "<td>&lt;b&gt;0&lt;/b&gt;</td>" in page and "&lt;b&gt;9&lt;/b&gt;" in page
    assert "&lt;b&gt;10&lt;/b&gt;" not in page  # the first rows only
    assert "25 rows" in page and "first 10 of 25" in page
    from reactive_nb.ui.widgets import LiveChart, LiveValue

    value = LiveValue(src, "count", label="Agents")
    chart = LiveChart(src, x="id", y="id")
    try:
        assert "Agents: 25" in mime(value)["text/html"]
        chart_html = mime(chart)["text/html"]
        assert "<th style=\"text-align:left\">id</th>" in chart_html and "name" not in chart_html
        assert "fresh" in chart_html and "updated at 2026-11-22T10:51:47" in chart_html
    finally:
        value.close()
        chart.close()


# ---- the flusher, stepped with a fake clock ---------------------------------------------------


class Pane:
    """The smallest `Flushable`: counts its pushes, and whether the next carries a frame."""

    def __init__(self, frames: bool = True) -> None:
        self.pushed_at: list[float] = []
        self.frames = frames
        self.clock: FakeClock | None = None
        self.during_push: Any = None  # called inside a push (a change arriving meanwhile)

    def _flush(self) -> bool:
        assert self.clock is not None
        self.pushed_at.append(self.clock.now)
        if self.during_push is not None:
            self.during_push()
        return self.frames


def pane(flusher: Flusher, clock: FakeClock, frames: bool = True) -> Pane:
    p = Pane(frames)
    p.clock = clock
    flusher.register(p)
    return p


def test_a_frame_goes_out_at_once_then_at_most_once_per_interval(
    clock: FakeClock, flusher: Flusher
) -> None:
    p = pane(flusher, clock)
    assert flusher.next_due() is None and flusher.flush_due() == 0
    flusher.request(p)  # t = 0, after a quiet period: due at once
    assert flusher.next_due() == 0.0
    assert flusher.flush_due() == 1 and p.pushed_at == [0.0]
    clock.now = 0.01  # the next change, inside the window the frame opened
    flusher.request(p)
    assert flusher.next_due() == INTERVAL
    for t in (0.01, 0.05, 0.099):  # more changes: coalesced into the one pending push
        clock.now = t
        flusher.request(p)
        assert flusher.flush_due() == 0
    assert p.pushed_at == [0.0]
    clock.now = INTERVAL
    assert flusher.flush_due() == 1 and p.pushed_at == [0.0, INTERVAL]
    assert flusher.flush_due() == 0 and flusher.next_due() is None
    clock.now = 1.0  # quiet for longer than the interval: at once again
    flusher.request(p)
    assert flusher.flush_due() == 1 and p.pushed_at[-1] == 1.0


def test_a_push_without_a_frame_opens_no_window(clock: FakeClock, flusher: Flusher) -> None:
    p = pane(flusher, clock, frames=False)
    flusher.request(p)  # status "refreshing"
    assert flusher.flush_due() == 1
    clock.now = 0.01
    p.frames = True  # the frame follows a few ms later: not held back
    flusher.request(p)
    assert flusher.next_due() == 0.01 and flusher.flush_due() == 1
    clock.now = 0.02  # but that frame opened the window
    flusher.request(p)
    assert flusher.next_due() == pytest.approx(0.01 + INTERVAL)


def test_a_change_during_a_push_waits_for_the_window(clock: FakeClock, flusher: Flusher) -> None:
    p = pane(flusher, clock)
    p.during_push = lambda: flusher.request(p)  # a worker changes the source meanwhile
    flusher.request(p)
    assert flusher.flush_due() == 1
    assert flusher.flush_due() == 0 and flusher.next_due() == INTERVAL
    p.during_push = None
    clock.now = INTERVAL
    assert flusher.flush_due() == 1 and p.pushed_at == [0.0, INTERVAL]


def test_widgets_are_throttled_independently(clock: FakeClock, flusher: Flusher) -> None:
    a, b = pane(flusher, clock), pane(flusher, clock)
    flusher.request(a)
    assert flusher.flush_due() == 1
    clock.now = 0.05
    flusher.request(a)
    flusher.request(b)
    assert flusher.flush_due() == 1 and b.pushed_at == [0.05] and a.pushed_at == [0.0]
    clock.now = INTERVAL
    assert flusher.flush_due() == 1 and a.pushed_at == [0.0, INTERVAL]


def test_stop_drops_pending_pushes_and_forgets_closed_widgets(
    clock: FakeClock, flusher: Flusher
) -> None:
    p = pane(flusher, clock)
    flusher.request(p)
    flusher.stop()
    assert flusher.flush_due() == 0 and p.pushed_at == []
    flusher.request(p)  # a later change is pushed again
    assert flusher.flush_due() == 1
    clock.now = 0.05
    flusher.request(p)
    flusher.unregister(p)
    flusher.request(p)  # closed: ignored
    clock.now = 1.0
    assert flusher.flush_due() == 0 and flusher.next_due() is None


def test_a_threaded_flusher_is_not_stepped() -> None:
    with pytest.raises(RuntimeError, match="threaded=False"):
        Flusher().flush_due()


# ---- one writer, coalesced and throttled ------------------------------------------------------


def test_first_change_is_pushed_at_once_with_all_its_fields(
    tables: list[LiveTable], clock: FakeClock, flusher: Flusher
) -> None:
    src = StandIn(df=None)
    w = make(tables, src, flusher=flusher)
    assert w.status == "loading" and w.total_rows == 0 and w.window["rows"] == []
    assert flusher.flush_due() == 0  # nothing changed since it was built
    src.status = "error"
    src.error = "connection refused"
    src.updated_at = dt.datetime(2024, 1, 1, 12, 0, 0)  # naive: taken as UTC
    assert flusher.flush_due() == 1  # at t = 0: not held back by any window
    assert len(w.pushes) == 1
    assert w.status == "error" and w.error == "connection refused"
    assert w.updated_at == "2024-01-01T12:00:00+00:00"
    assert threading.current_thread().name == w.pushes[0][0]  # stepped: no thread
    assert not any(t.name == THREAD_NAME for t in threading.enumerate())


def test_frames_from_a_worker_thread_are_coalesced_and_throttled(
    tables: list[LiveTable], clock: FakeClock, flusher: Flusher
) -> None:
    src = StandIn(df=ids(0), status="fresh")
    w = make(tables, src, flusher=flusher)
    last = 100

    def writer() -> None:
        for i in range(1, last + 1):
            src.status = "refreshing"
            src.df = ids(i)
            src.status = "fresh"
            src.runs = i

    thread = threading.Thread(target=writer, name="test-writer")
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert flusher.flush_due() == 1  # 400 trait changes at t = 0: one push, the latest
    (_, state), = w.pushes
    assert state["total_rows"] == last and state["runs"] == last and state["status"] == "fresh"
    assert w.total_rows == last and w.page(last - 1, 5)["rows"] == [[last - 1]]
    clock.now = 0.05
    src.df = ids(5)
    src.df = ids(6)
    assert flusher.flush_due() == 0 and w.total_rows == last  # held back by the window
    clock.now = INTERVAL
    assert flusher.flush_due() == 1 and w.total_rows == 6
    assert len(w.pushes) == 2


def test_the_flush_thread_is_the_one_writer_and_close_stops_it(tables: list[LiveTable]) -> None:
    src = StandIn(df=ids(0), status="fresh")
    w = make(tables, src)  # the shared flush thread
    w.gate = threading.Event()
    src.df = ids(1)
    assert w.pushing.wait(WAIT)  # the first push is under way, held by the gate
    last = 100
    w.push_predicate = lambda s: s.get("total_rows") == last

    def writer() -> None:
        for i in range(2, last + 1):
            src.status = "refreshing"
            src.df = ids(i)
            src.status = "fresh"
            src.runs = i

    thread = threading.Thread(target=writer, name="test-writer")
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    w.gate.set()
    assert w.pushed.wait(WAIT)
    # The changes made during the first push were coalesced into exactly one more.
    assert [s["total_rows"] for _, s in w.pushes] == [1, last]
    assert {name for name, _ in w.pushes} == {THREAD_NAME}
    assert w.total_rows == last and w.runs == last and w.status == "fresh"
    assert any(t.name == THREAD_NAME for t in threading.enumerate())
    w.close()
    assert not any(t.name == THREAD_NAME for t in threading.enumerate())
    src.df = ids(3)  # a closed widget no longer follows its source
    assert not any(t.name == THREAD_NAME for t in threading.enumerate())


def test_the_flush_thread_restarts_after_stop_with_a_push_pending(
    tables: list[LiveTable], clock: FakeClock
) -> None:
    threaded = Flusher(interval=INTERVAL, clock=clock, threaded=True)
    src = StandIn(df=ids(0), status="fresh")
    w = make(tables, src, flusher=threaded)
    src.df = ids(1)
    assert w.pushed.wait(WAIT)
    src.df = ids(2)  # due at t = 0.1, which the fake clock never reaches by itself
    assert threaded.next_due() == INTERVAL
    threaded.stop()  # as %unload_ext does: the pending push is dropped
    assert not any(t.name == THREAD_NAME for t in threading.enumerate())
    w.pushed.clear()
    w.push_predicate = lambda s: s.get("total_rows") == 3
    clock.now = 1.0
    src.df = ids(3)  # the widget changes again: pushed by a new thread
    assert w.pushed.wait(WAIT)
    assert w.total_rows == 3
    threaded.stop()


def test_page_requests_from_many_threads_stay_consistent(
    tables: list[LiveTable], clock: FakeClock, flusher: Flusher
) -> None:
    def generation(g: int) -> pd.DataFrame:
        return pd.DataFrame({"id": np.arange(5_000), "gen": np.full(5_000, g)})

    src = StandIn(df=generation(0), status="fresh")
    w = make(tables, src, flusher=flusher)
    stop = threading.Event()
    errors: list[str] = []

    def reader(k: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            sort = [["id", False], ["gen", True], []][i % 3]
            reply = w.page((k * 997 + i * 131) % 5_000, 40, sort=sort)
            gens = {row[1] for row in reply["rows"]}
            if len(gens) > 1:
                errors.append(f"rows of several frames in one reply: {gens}")
            if sort == ["id", False] and reply["rows"]:
                ids = [row[0] for row in reply["rows"]]
                if ids != sorted(ids, reverse=True):
                    errors.append("a sorted page out of order")

    readers = [threading.Thread(target=reader, args=(k,), name=f"test-r{k}") for k in range(4)]
    for t in readers:
        t.start()
    for g in range(1, 40):  # each frame pushed (here) while the readers ask for pages
        src.df = generation(g)
        clock.advance(INTERVAL)
        assert flusher.flush_due() == 1
    stop.set()
    for t in readers:
        t.join(WAIT)
    assert not any(t.is_alive() for t in readers)
    assert errors == []
    assert w.pushes[-1][1]["window"]["rows"][0][1] == 39
    assert w.page(0, 3)["rows"] == [[0, 39], [1, 39], [2, 39]]


# ---- visibility --------------------------------------------------------------------------------


def test_visibility_reports_heartbeats_and_lazy_decay(
    tables: list[LiveTable], clock: FakeClock, flusher: Flusher
) -> None:
    clock.now = 1000.0
    src = StandIn(df=pd.DataFrame({"id": [1]}), status="fresh")
    w = make(tables, src, flusher=flusher)  # the table reads the flusher's clock
    assert w.visible_state() is None and src.visibility == []  # never reported
    w.set_state({"visible": True})  # what the comm does with the browser's report
    assert src.visibility == [(w.token, True)] and w.visible_state() is True
    clock.advance(25.0)
    w.handle_message(w, {"type": "heartbeat"}, [])
    assert src.visibility[-1] == (w.token, True)
    clock.advance(25.0)
    assert w.visible_state() is True  # the heartbeat kept it alive
    w.set_state({"visible": False})
    assert src.visibility[-1] == (w.token, False) and w.visible_state() is False
    clock.advance(31.0)  # the tab was closed: no more reports
    assert w.visible_state() is None
    assert w.visible_state() is None
    assert src.visibility[-1] == (w.token, None)
    assert [v for _, v in src.visibility].count(None) == 1  # decay reported once
    w.close()
    assert src.visibility[-1] == (w.token, None)


def test_displays_as_a_widget(tables: list[LiveTable]) -> None:
    w = make(tables, StandIn(df=pd.DataFrame({"id": [1]})))
    bundle = w._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == w.model_id
    assert w.name == "agents.getAll"


def test_live_widget_takes_page_size_and_height(sqlite_url: str) -> None:
    import reactive_nb as rnb
    from tests.teamhub import create

    create(sqlite_url)
    with rnb.connect(sqlite_url, workers=0) as db:
        @db.reactive(dependencies=["agent"])
        def agents() -> pd.DataFrame:
            return db.read_sql("SELECT id FROM agent")

        live = agents.live()
        table = live.widget(page_size=7, height=300)
        assert (table.page_size, table.height) == (7, 300)
        assert live.widget(page_size=9) is table and table.page_size == 9
        live.close()
