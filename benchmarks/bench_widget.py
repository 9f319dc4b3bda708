"""Live table widget: what reaches the browser, how fast a page is answered, and how
fast the flush thread pushes a changed frame.

For 1k / 100k / 1M rows x 10 columns: the widget's initial state (JSON bytes, goal
<= 64 KB: it carries only the first page) and the Python time to answer a page request
(goal <= 50 ms), next to the baseline of sending the whole frame as JSON, as a widget
without viewport paging would.

Pushes (Widget 2): the time from a source change to the end of the widget's push by the
flush thread, for the first frame after a quiet period (goal: p99 under the 100 ms
throttle interval, i.e. not held back), next to pushing inline on the changing thread;
and the frames a hot source gets pushed (goal: at most one per interval), next to one
push per change. (tests/test_widget.py checks the throttle's rules with a fake clock.)
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import traitlets

from .common import (
    Contender,
    CpuWatch,
    Settings,
    Table,
    fmt_ms,
    fmt_ratio,
    fmt_time,
    interleave,
    median_ratio,
    stats,
    time_calls,
    verdict,
)

STATE_GOAL = 64 * 1024
PAGE_GOAL = 0.050
INTERVAL = 0.1
"""The flush thread's throttle interval (as in `reactive_nb.ui.widgets.table`)."""
PUSH_ROWS = 1_000


class _Source(traitlets.HasTraits):
    """The traits a LiveTable reads from a LiveQuery, over a ready frame."""

    df = traitlets.Any(None, allow_none=True)
    status = traitlets.Unicode("fresh")
    error = traitlets.Unicode(None, allow_none=True)
    updated_at = traitlets.Any(None, allow_none=True)
    runs = traitlets.Int(1)
    name = "bench.table"
    primary_key = ("id",)

    def set_visible(self, token: str, visible: bool | None) -> None:
        pass


def _frame(n: int) -> Any:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(5)
    return pd.DataFrame({
        "id": np.arange(n), "org": rng.choice(["acme", "globex", "initech"], n),
        "name": [f"agent {i}" for i in range(n)], "score": rng.random(n),
        "count": rng.integers(0, 1000, n), "created": pd.date_range("2026-01-01", periods=n,
                                                                   freq="s"),
        "flag": rng.random(n) > 0.5, "amount": rng.random(n) * 1e4,
        "note": rng.choice(np.array(["ok", "late", "escalated", None], dtype=object), n),
        "region": rng.choice(["eu", "us", "apac"], n),
    })


def _measure(n: int, repeat: int, rng: random.Random) -> list[str]:
    """One table row: payload sizes and page-request times for an ``n``-row frame."""
    from reactive_nb.ui.widgets import LiveTable

    df = _frame(n)
    whole = len(df.to_json(orient="values", date_format="iso"))
    widget = LiveTable(_Source(df=df), page_size=50)
    try:
        state = widget.get_state()
        size = len(json.dumps(state, allow_nan=False))
        rows = len(json.dumps(state["window"], allow_nan=False))
        pages = stats(time_calls(lambda: widget.page(rng.randrange(max(1, n - 60)), 60),
                                 repeat))
        by_score = ["score", False]
        first_sort = stats(time_calls(lambda: widget.page(n // 2, 60, sort=by_score), 1,
                                      warmup=0))
        # later pages reuse the ordering computed by the first sorted request
        sorted_pages = stats(time_calls(
            lambda: widget.page(rng.randrange(max(1, n - 60)), 60, sort=by_score), repeat))
    finally:
        widget.close()
    ok = size <= STATE_GOAL and pages.p99 <= PAGE_GOAL
    return [f"{n:,}", f"{whole / 1e6:.2f} MB", f"{size / 1024:.1f} KB", f"{rows / 1024:.1f} KB",
            fmt_ratio(whole / size), fmt_time(pages.p50), fmt_time(pages.p99),
            fmt_time(first_sort.median), fmt_time(sorted_pages.p50), "≤ 64 KB, ≤ 50 ms",
            verdict(ok)]


def _timed_table(source: Any, flusher: Any) -> Any:
    """A LiveTable that counts its frame pushes and signals each push."""
    from reactive_nb.ui.widgets import LiveTable

    class Timed(LiveTable):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.frames = 0
            self.pushed = threading.Event()
            self.last_total = -1
            super().__init__(*args, **kwargs)

        def _push(self, state: dict[str, Any]) -> None:
            super()._push(state)
            if "version" in state:
                self.frames += 1
            self.last_total = state.get("total_rows", self.last_total)
            self.pushed.set()

    return Timed(source, flusher=flusher)


def _push_table(settings: Settings) -> Table:
    from reactive_nb.ui.widgets.flush import Flusher

    frames = [_frame(PUSH_ROWS), _frame(PUSH_ROWS)]  # equal rows, two objects: two frames
    final = _frame(PUSH_ROWS - 1)
    threaded = Flusher(interval=INTERVAL)  # its own flush thread, as the shared one
    inline = Flusher(interval=INTERVAL, threaded=False)
    src_thread, src_inline = _Source(df=frames[0]), _Source(df=frames[0])
    via_thread = _timed_table(src_thread, threaded)
    via_inline = _timed_table(src_inline, inline)
    turn = itertools.count(1)

    def through_thread() -> None:
        via_thread.pushed.clear()
        src_thread.df = frames[next(turn) % 2]
        if not via_thread.pushed.wait(10):
            raise RuntimeError("the flush thread pushed nothing within 10 s")

    def on_this_thread() -> None:
        src_inline.df = frames[next(turn) % 2]
        if inline.flush_due() != 1:
            raise RuntimeError("the inline flusher had nothing due")

    def quiet() -> None:
        time.sleep(INTERVAL * 1.5)  # pacing: the previous frame's window has closed

    table = Table(
        "Widget 2 · a changed frame pushed by the flush thread (goals: first frame p99 < "
        "100 ms, at most one frame per 100 ms)",
        ["measurement", "flush thread", "baseline", "flush thread / baseline", "goal",
         "result"])
    cpu = CpuWatch().start()
    try:
        repeat = settings.pick(30, 8)
        timed = interleave({"thread": Contender(through_thread, quiet),
                            "inline": Contender(on_this_thread, quiet)}, repeat)
        ours, base = stats(timed["thread"]), stats(timed["inline"])
        table.add("first frame after a quiet period: change → pushed, p50 / p99",
                  f"{fmt_ms(ours.p50)} / {fmt_ms(ours.p99)}",
                  f"{fmt_ms(base.p50)} / {fmt_ms(base.p99)} (pushed inline)",
                  fmt_ratio(median_ratio(timed["thread"], timed["inline"])),
                  "p99 < 100 ms", verdict(ours.p99 < INTERVAL))

        seconds = settings.pick(20, 10) / 10
        quiet()
        before = via_thread.frames
        changes = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            src_thread.df = frames[changes % 2]
            changes += 1
        src_thread.df = final  # the last change: wait until it is on the widget
        changes += 1
        while via_thread.last_total != PUSH_ROWS - 1:
            via_thread.pushed.clear()
            if not via_thread.pushed.wait(10):
                raise RuntimeError("the last change was not pushed within 10 s")
        elapsed = time.monotonic() - start
        pushed = via_thread.frames - before
        bound = int(elapsed / INTERVAL) + 1
        table.add(f"hot source for {seconds:g} s: frames pushed",
                  f"{pushed} ({pushed / elapsed:.1f}/s)",
                  f"{changes:,} (one push per change, {changes / elapsed:,.0f}/s)",
                  fmt_ratio(pushed / changes), f"≤ {bound} (elapsed / 100 ms + 1)",
                  verdict(pushed <= bound))
    finally:
        cpu.stop()
        via_thread.close()
        via_inline.close()
        threaded.stop()
    table.note(f"Frames of {PUSH_ROWS:,} rows x 10 columns. A push is the widget's whole "
               "update: diff against the previous frame, header, first page, traits set in "
               "one comm message (a dummy comm: no kernel). Latency: from setting the "
               "source's `df` until that push has ended.")
    table.note("Baseline: the same push made inline on the changing thread (an unthreaded "
               "flusher stepped right after the change), i.e. without the hand-off to the "
               f"flush thread; {repeat} rounds of each, interleaved, each after "
               f"{INTERVAL * 1.5 * 1e3:.0f} ms of quiet.")
    table.note("Hot source: the main thread replaces `df` in a tight loop; the flush thread "
               "pushes the first frame at once and then the latest one per 100 ms window.")
    table.note(f"While measuring: {cpu.describe()}.")
    return table


def run(settings: Settings) -> Iterator[Table]:
    from reactive_nb.ui.widgets import stop_flush_thread

    table = Table(
        "Widget 1 · live table payload and page requests, 10 columns (goals: initial state "
        "≤ 64 KB, page request ≤ 50 ms)",
        ["rows", "whole frame as JSON (baseline)", "initial state", "of which rows",
         "baseline / initial", "page request p50", "page request p99", "first sort",
         "sorted page p50", "goal", "result"])
    repeat = settings.pick(200, 40)
    try:
        for n in (1_000, 100_000, 1_000_000):
            table.add(*_measure(n, repeat, random.Random(3)))
    finally:
        stop_flush_thread()
    table.note("Initial state: `json.dumps(widget.get_state())`, the widget's JS and CSS "
               "included; only the first page of rows is in it. Page request: "
               "`widget.page(start, 60)` at random offsets, the Python work behind one "
               "browser request (slice, format, JSON-safe values). Sorting happens in Python "
               "once per (frame, column); later pages reuse that order.")
    table.note("Baseline: the whole frame as JSON (`df.to_json(orient='values')`), what a "
               "table widget without viewport paging sends at every update.")
    yield table
    yield _push_table(settings)
