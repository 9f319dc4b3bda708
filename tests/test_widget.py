"""LiveTable at the Python level (no browser, no kernel: ipywidgets uses a dummy comm).

Covers the page logic on a 1,000,000-row frame (payload size, page time), sorting,
cell formatting, changed-row diffs, throttled/coalesced pushes from worker threads,
thread-safe page handling and visibility reporting with lazy decay.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import traitlets

from reactive_nb.ui.widgets import LiveTable, paging, stop_flush_thread
from reactive_nb.ui.widgets.flush import THREAD_NAME

N_BIG = 1_000_000
STATE_LIMIT = 64 * 1024


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
        self._rec_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def _push(self, state: dict[str, Any]) -> None:
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
        self._on_msg(self, msg, [])
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
def tables() -> Iterator[list[LiveTable]]:
    """Widgets made by a test; closed afterwards (which stops the flush thread)."""
    made: list[LiveTable] = []
    yield made
    for w in made:
        w.close()
    stop_flush_thread()


def make(tables: list[LiveTable], source: StandIn, **kw: Any) -> Recording:
    w = Recording(source, **kw)
    tables.append(w)
    return w


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


def test_page_request_is_fast_on_a_million_rows(
    big: pd.DataFrame, tables: list[LiveTable], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = make(tables, StandIn(df=big, status="fresh"))
    sorts = 0
    real_sort = paging.sort_order

    def counting_sort(*args: Any) -> Any:
        nonlocal sorts
        sorts += 1
        return real_sort(*args)

    monkeypatch.setattr(paging, "sort_order", counting_sort)

    def timed(start: int, sort: list[Any] | None = None) -> tuple[float, dict[str, Any]]:
        t0 = time.perf_counter()
        reply = w.ask(start, 60, sort)
        return time.perf_counter() - t0, reply

    times = []
    for start in (0, 499_970, 999_940, 123_456, 765_432):
        elapsed, reply = timed(start)
        times.append(elapsed)
        assert reply["start"] == start and len(reply["rows"]) == 60
        assert [r[0] for r in reply["rows"]] == list(range(start, start + 60))
        json.dumps(reply, allow_nan=False)
    first_sort, reply = timed(500_000, ["score", False])
    sorted_times = [timed(s, ["score", False])[0] for s in (0, 250_000, 999_000)]
    median = statistics.median(times)
    print(
        f"\npage of 60 rows from 1M x 10: median {median * 1000:.2f} ms, max "
        f"{max(times) * 1000:.2f} ms; first sorted page {first_sort * 1000:.1f} ms, "
        f"later sorted pages max {max(sorted_times) * 1000:.2f} ms"
    )
    assert max(times) <= 0.25
    assert max(sorted_times) <= 0.25
    assert sorts == 1  # the 1M-row ordering is computed once per (frame, sort)
    scores = [r[3] for r in reply["rows"]]
    assert scores == sorted(scores, reverse=True)
    assert reply["sort"] == ["score", False]


def test_page_is_clamped_to_the_frame(tables: list[LiveTable]) -> None:
    w = make(tables, StandIn(df=wide_frame(30), status="fresh"))
    assert w.ask(25, 100)["rows"][-1][0] == 29
    assert w.ask(25, 100)["start"] == 25
    assert w.ask(500, 10)["rows"] == []
    assert w.ask(-5, 3)["start"] == 0
    reply = w.ask(0, 10**9)
    assert len(reply["rows"]) == 30 and reply["seq"] == 7


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


def test_refresh_marks_changed_rows_in_pushes_and_pages(tables: list[LiveTable]) -> None:
    src = StandIn(df=pd.DataFrame({"id": [1, 2, 3], "v": ["a", "b", "c"]}), primary_key=("id",))
    w = make(tables, src)
    assert w.window["changed"] == []  # first frame: nothing highlighted
    w.push_predicate = lambda s: s.get("total_rows") == 4
    src.df = pd.DataFrame({"id": [0, 1, 2, 3], "v": ["z", "a", "b!", "c"]})
    assert w.pushed.wait(5.0)
    state = w.pushes[-1][1]
    assert state["window"]["changed"] == [0, 2]
    assert state["window"]["changed_age_ms"] < 1000 * 1.5
    # A later page request (sorted differently) marks the same rows by their new places.
    assert w.ask(0, 4, ["id", False])["changed"] == [1, 3]


# ---- one writer, coalesced and throttled -------------------------------------------------------


def test_updates_from_a_thread_are_coalesced_and_throttled(tables: list[LiveTable]) -> None:
    src = StandIn(df=pd.DataFrame({"id": [0]}), status="fresh")
    w = make(tables, src)
    last = 100
    w.push_predicate = lambda s: s.get("total_rows") == last
    done = threading.Event()

    def writer() -> None:
        for i in range(1, last + 1):
            src.status = "refreshing"
            src.df = pd.DataFrame({"id": range(i)})
            src.status = "fresh"
            src.runs = i
        done.set()

    t0 = time.monotonic()
    thread = threading.Thread(target=writer, name="test-writer")
    thread.start()
    assert done.wait(10.0)
    thread.join()
    assert w.pushed.wait(5.0)
    elapsed = time.monotonic() - t0
    pushes = list(w.pushes)
    print(f"\n{last * 4} trait changes in {elapsed * 1000:.0f} ms -> {len(pushes)} pushes")
    # 10 per second at most (plus the immediate first one), and never one per change.
    assert len(pushes) <= elapsed / 0.1 + 2
    assert len(pushes) < 20
    assert {name for name, _ in pushes} == {THREAD_NAME}
    final = pushes[-1][1]
    assert final["total_rows"] == last and final["runs"] == last and final["status"] == "fresh"
    assert w.total_rows == last and w.page(last - 1, 5)["rows"] == [[last - 1]]


def test_first_change_is_pushed_at_once_and_close_stops_the_thread(
    tables: list[LiveTable],
) -> None:
    src = StandIn(df=None)
    w = make(tables, src)
    assert w.status == "loading" and w.total_rows == 0 and w.window["rows"] == []
    t0 = time.monotonic()
    src.status = "error"
    src.error = "connection refused"
    src.updated_at = dt.datetime(2024, 1, 1, 12, 0, 0)  # naive: taken as UTC
    assert w.pushed.wait(5.0)
    assert time.monotonic() - t0 < 0.09  # not held back by the throttle window
    w.push_predicate = lambda s: s.get("updated_at") is not None
    w.pushed.clear()
    if w.updated_at is None:
        assert w.pushed.wait(5.0)
    assert w.status == "error" and w.error == "connection refused"
    assert w.updated_at == "2024-01-01T12:00:00+00:00"
    assert any(t.name == THREAD_NAME for t in threading.enumerate())
    w.close()
    assert not any(t.name == THREAD_NAME for t in threading.enumerate())
    src.df = pd.DataFrame({"id": [1]})  # a closed widget no longer follows its source
    assert not any(t.name == THREAD_NAME for t in threading.enumerate())


def test_page_requests_from_many_threads_stay_consistent(tables: list[LiveTable]) -> None:
    def generation(g: int) -> pd.DataFrame:
        return pd.DataFrame({"id": np.arange(5_000), "gen": np.full(5_000, g)})

    src = StandIn(df=generation(0), status="fresh")
    w = make(tables, src)
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
    w.push_predicate = lambda s: "window" in s and s["window"]["rows"][0][1] == 39
    for t in readers:
        t.start()
    for g in range(1, 40):
        src.df = generation(g)
    assert w.pushed.wait(5.0)
    stop.set()
    for t in readers:
        t.join(5.0)
    assert errors == []
    assert w.page(0, 3)["rows"] == [[0, 39], [1, 39], [2, 39]]


# ---- visibility --------------------------------------------------------------------------------


def test_visibility_reports_heartbeats_and_lazy_decay(tables: list[LiveTable]) -> None:
    now = [1000.0]
    src = StandIn(df=pd.DataFrame({"id": [1]}), status="fresh")
    w = make(tables, src)
    w._clock = lambda: now[0]  # type: ignore[method-assign]
    assert w.visible_state() is None and src.visibility == []  # never reported
    w.set_state({"visible": True})  # what the comm does with the browser's report
    assert src.visibility == [(w.token, True)] and w.visible_state() is True
    now[0] += 25.0
    w._on_msg(w, {"type": "heartbeat"}, [])
    assert src.visibility[-1] == (w.token, True)
    now[0] += 25.0
    assert w.visible_state() is True  # the heartbeat kept it alive
    w.set_state({"visible": False})
    assert src.visibility[-1] == (w.token, False) and w.visible_state() is False
    now[0] += 31.0  # the tab was closed: no more reports
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
