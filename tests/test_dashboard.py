"""Live charts and KPI values: built from a live query's frame, redrawn by the flush thread
(the one writer) when the frame changes, with no cell run.

Pushes go through a `Flusher(clock=..., threaded=False)` stepped by the test, as in
tests/test_widget.py; the database is a real SQLite file and the scheduler is stepped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import reactive_nb as rnb
from reactive_nb.ui.widgets import LiveChart, LiveValue
from reactive_nb.ui.widgets.chart import chart_series
from reactive_nb.ui.widgets.flush import Flusher


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Any]:
    database = rnb.connect(f"sqlite:///{tmp_path}/kpi.db", workers=0, min_interval=0)
    database.execute("CREATE TABLE event (id INTEGER PRIMARY KEY, day TEXT, kind TEXT, n INT)")
    database.execute("INSERT INTO event (day, kind, n) VALUES "
                     "('2026-01-01', 'a', 1), ('2026-01-02', 'a', 3), ('2026-01-01', 'b', 2)")
    yield database
    database.close()


@pytest.fixture
def flusher() -> Flusher:
    return Flusher(interval=0.1, clock=Clock(), threaded=False)


def _events(db: Any) -> Any:
    @db.reactive(dependencies=["event"])
    def events(kind: str | None = None) -> Any:
        return db.read_sql("SELECT day, kind, n FROM event ORDER BY id")

    return events


def _advance(db: Any, flusher: Flusher) -> None:
    db.scheduler.run_until_idle()
    flusher.clock.now += 1.0  # type: ignore[attr-defined]
    flusher.flush_due()


def test_chart_redraws_when_the_frame_changes(db: Any, flusher: Flusher) -> None:
    live = _events(db).live()
    db.scheduler.run_until_idle()
    chart = LiveChart(live, x="day", y="n", color="kind", kind="line", flusher=flusher)
    assert chart.x_kind == "time" and chart.status == "fresh"
    assert [(s["name"], [p[1] for p in s["points"]]) for s in chart.series] == [
        ("a", [1, 3]), ("b", [2])]
    db.execute("INSERT INTO event (day, kind, n) VALUES ('2026-01-03', 'b', 5)")
    assert chart.series[1]["points"][-1][1] == 2  # nothing pushed before the flush thread runs
    _advance(db, flusher)
    assert [p[1] for p in chart.series[1]["points"]] == [2, 5]
    chart.close()


def test_live_query_builds_chart_and_value_through_the_registered_factories(db: Any) -> None:
    live = _events(db).live()
    db.scheduler.run_until_idle()
    chart = live.chart(x="day", y="n", kind="bar")
    value = live.value("count", label="Events")
    assert isinstance(chart, LiveChart) and chart.kind == "bar"
    assert isinstance(value, LiveValue) and (value.label, value.text) == ("Events", "3")
    with pytest.raises(ValueError, match="kind must be one of"):
        live.chart(x="day", y="n", kind="pie")
    chart.close()
    value.close()


def test_value_follows_a_column_and_the_row_count(db: Any, flusher: Flusher) -> None:
    @db.reactive(dependencies=["event"])
    def total() -> Any:
        return db.read_sql("SELECT SUM(n) AS total FROM event")

    live = total.live()
    db.scheduler.run_until_idle()
    kpi = LiveValue(live, "total", label="Total", format="{:,} events", flusher=flusher)
    rows = LiveValue(_events(db).live(), flusher=flusher)
    _advance(db, flusher)
    assert (kpi.text, kpi.value, rows.text) == ("6 events", 6, "3")
    db.execute("INSERT INTO event (day, kind, n) VALUES ('2026-01-03', 'b', 1000)")
    _advance(db, flusher)
    assert (kpi.text, rows.text) == ("1,006 events", "4")
    with pytest.raises(KeyError, match="no column 'nope'"):
        LiveValue(live, "nope", flusher=flusher)
    kpi.close()
    rows.close()


def test_chart_series_kinds_order_and_limits() -> None:
    frame = pd.DataFrame({"x": [3, 1, 2, None], "a": [30, 10, 20, 5], "b": [1, None, 2, 3]})
    kind, series = chart_series(frame, "x", ["a", "b"], None, max_points=2)
    assert kind == "number"
    assert series == [{"name": "a", "points": [[2.0, 20], [3.0, 30]]},
                      {"name": "b", "points": [[2.0, 2.0], [3.0, 1.0]]}]
    kind, series = chart_series(pd.DataFrame({"c": ["x", "y"], "v": [1, 2]}), "c", ["v"], None, 9)
    assert kind == "category" and series[0]["points"] == [["x", 1], ["y", 2]]
    times = pd.DataFrame({"t": pd.to_datetime(["2026-01-01T00:00:01Z"]), "v": [1]})
    assert chart_series(times, "t", ["v"], None, 9)[1][0]["points"] == [[1767225601000, 1]]
    with pytest.raises(KeyError, match="no column 'z'"):
        chart_series(frame, "x", ["z"], None, 9)
