"""notebooks/dashboard.ipynb served by Voila, in headless Chromium, fed by another process:
what a viewer of a reactive_nb dashboard sees.

The test creates the demo SQLite database and installs reactive_nb's triggers on its
tables, so the dashboard's kernel (started by Voila for the page) polls ``data_version``
and hears writes from other processes. Voila runs the notebook and shows its outputs
only: a header and three live tables in an ipywidgets layout. Then the *test process*
inserts messages with plain ``sqlite3``: each must appear in the ``latest_messages``
table within 5 s, and the per-channel count must move, with no page reload and no
browser console error. Commit -> DOM latencies are printed and appended to
test-output/browser/latency.jsonl.

Known bug, reported as XFAIL by test_first_render_shows_every_row until table.js is fixed:
under Voila a table's first draw often shows 2 rows and too narrow columns (see
``Dashboard``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import harness
import pytest
from demo_writer import ExternalWriter, demo_database

from reactive_nb.ui import demo

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = harness.REPO / "notebooks" / "dashboard.ipynb"
GENERATOR = harness.REPO / "notebooks" / "make_dashboard.py"
ORG = "acme"  # the organization the dashboard shows
TABLES = ("latest_messages", "agents_by_status", "messages_by_channel")
INSERTS = 3  # lone writes, each measured commit -> DOM
QUIET_MS = 300  # > the widget's 100 ms throttle window: each insert is a lone write
LATENCY_LOG = harness.OUTPUT / "latency.jsonl"

# Records, with browser timestamps (epoch ms, same clock as Python's time.time()), the
# first appearance of a row of a table holding a watched text in some cell (key
# "table:text"), and each status a table's badge shows, from a MutationObserver: nothing
# is missed between two polls of the test.
_OBSERVE_JS = """() => {
  if (window.__rnb) return;
  const state = { seen: {}, statuses: {}, watch: new Set() };
  window.__rnb = state;
  const now = () => performance.timeOrigin + performance.now();
  const scan = () => {
    const t = now();
    for (const table of document.querySelectorAll(".rnb-table")) {
      const name = table.dataset.name;
      const badge = table.querySelector(".rnb-badge");
      const log = (state.statuses[name] ||= []);
      const status = badge ? badge.textContent : null;
      if (status && (!log.length || log[log.length - 1][0] !== status)) log.push([status, t]);
      if (!state.watch.size) continue;
      for (const row of table.querySelectorAll(".rnb-row:not(.rnb-pending)")) {
        const cells = Array.from(row.children, (c) => c.textContent);
        for (const text of cells) {
          const key = `${name}:${text}`;
          if (state.watch.has(key) && !(key in state.seen)) {
            state.seen[key] = {
              t, pos: Number(row.dataset.pos), cells,
              changed: row.classList.contains("rnb-changed"),
            };
          }
        }
      }
    }
  };
  new MutationObserver(scan).observe(document.body, {
    subtree: true, childList: true, characterData: true, attributes: true,
    attributeFilter: ["data-status"],
  });
  scan();
}"""

# Nothing reached a badge or a watched row for `ms` (browser clock).
_QUIET_JS = """(ms) => {
  const times = Object.values(window.__rnb.seen).map((s) => s.t);
  for (const log of Object.values(window.__rnb.statuses)) {
    if (log.length) times.push(log[log.length - 1][1]);
  }
  return performance.timeOrigin + performance.now() - Math.max(0, ...times) > ms;
}"""

# A table's rows as lists of cell texts (the "#" gutter first).
_ROWS_JS = """(name) => Array.from(
  document.querySelectorAll(`.rnb-table[data-name="${name}"] .rnb-row:not(.rnb-pending)`),
  (r) => Array.from(r.children, (c) => c.textContent)
)"""

# Per table: [total rows (its header), rows drawn with data, short cells (<= 20 chars, which
# always fit a column) cut off with an ellipsis].
_SHOWN_JS = """() => Object.fromEntries(Array.from(document.querySelectorAll(".rnb-table"), (t) => [
  t.dataset.name,
  [Number(t.querySelector(".rnb-count").textContent.replace(/[^0-9]/g, "")),
   t.querySelectorAll(".rnb-row:not(.rnb-pending)").length,
   Array.from(t.querySelectorAll(".rnb-row .rnb-cell")).filter(
     (c) => c.textContent.length <= 20 && c.scrollWidth > c.clientWidth + 1).length],
]))"""

# Every table draws all its rows (up to the 15 its scroll box shows).
_ALL_SHOWN_JS = """() => Array.from(document.querySelectorAll(".rnb-table")).every((t) =>
  t.querySelectorAll(".rnb-row:not(.rnb-pending)").length
  === Math.min(15, Number(t.querySelector(".rnb-count").textContent.replace(/[^0-9]/g, ""))))"""

_RENDERED_JS = """(names) => names.every((n) => {
  const table = document.querySelector(`.rnb-table[data-name="${n}"]`);
  return table && table.querySelector(".rnb-badge").textContent === "fresh"
    && table.querySelector(".rnb-row:not(.rnb-pending)");
})"""


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_dashboard", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo database with reactive_nb's triggers on every demo table."""
    return demo_database(tmp_path_factory.mktemp("voila-db"))


@pytest.fixture(scope="module")
def voila(tmp_path_factory: pytest.TempPathFactory, database: Path) -> Iterator[harness.Voila]:
    env: dict[str, str | None] = {
        "REACTIVE_NB_URL": f"sqlite:///{database}",
        "REACTIVE_NB_REDIS": None,  # the embedded bus: the triggers are the only channel
    }
    with harness.start_voila(tmp_path_factory.mktemp("voila"), NOTEBOOK, env=env) as server:
        yield server


class Dashboard(NamedTuple):
    """The open dashboard, and what its tables drew before anything changed.

    ``first_render`` maps each table to [total rows, rows drawn, short cells cut off] once
    its data is fresh. Under Voila a table's first draw often runs before its view is
    attached (0 px box, no font for measuring widths) and its state is already fresh, so no
    change follows: table.js redraws when the box gets its size (ResizeObserver).
    test_first_render_shows_every_row guards that.
    """

    view: harness.VoilaPage
    first_render: dict[str, list[int]]


@pytest.fixture(scope="module")
def dashboard(voila: harness.Voila) -> Iterator[Dashboard]:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    t0 = time.monotonic()
    view = voila.open()
    page = view.page
    loaded = time.monotonic() - t0
    page.wait_for_function(_RENDERED_JS, arg=list(TABLES), timeout=30000)
    fresh = time.monotonic() - t0
    with contextlib.suppress(PlaywrightTimeout):  # reported by test_first_render_...
        page.wait_for_function(_ALL_SHOWN_JS, timeout=5000)
    first: dict[str, list[int]] = page.evaluate(_SHOWN_JS)
    print(f"\nvoila: page loaded in {loaded:.1f} s, live tables fresh after {fresh:.1f} s; "
          f"first render [total, drawn, cut off]: {first}; stubbed offline: {view.stubbed}")
    page.evaluate(_OBSERVE_JS)
    yield Dashboard(view, first)
    view.assert_no_console_errors()


@pytest.fixture(scope="module")
def writer(database: Path) -> Iterator[ExternalWriter]:
    w = ExternalWriter(database, ORG)
    yield w
    w.close()


def test_dashboard_notebook_is_generated() -> None:
    """notebooks/dashboard.ipynb is what make_dashboard.py writes, with no outputs."""
    nbformat: Any = importlib.import_module("nbformat")  # untyped

    cells = _load_generator().DASHBOARD_CELLS
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert [(c.cell_type, c.source) for c in nb.cells] == cells, (
        "notebooks/dashboard.ipynb is out of date: run python notebooks/make_dashboard.py")
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
            assert "sleep" not in cell.source  # no cell may block the dashboard


def test_first_render_shows_every_row(dashboard: Dashboard) -> None:
    """Each table draws all its rows on its own, without a later change or a scroll."""
    wrong = {name: shown for name, shown in dashboard.first_render.items()
             if shown[1] != min(15, shown[0]) or shown[2]}
    assert not wrong, f"tables drew too few rows or cut short cells off: {wrong}"


def test_dashboard_shows_live_tables_and_no_code(dashboard: Dashboard) -> None:
    view = dashboard.view
    page = view.page
    assert page.locator("h1", has_text="Support activity, live").count() == 1  # markdown
    assert page.locator("h2", has_text=f"Organization: {ORG}").count() == 1  # the layout
    body = page.inner_text("body")
    # Voila shows outputs only: no input area, no source, no error output.
    code_cells = page.locator(".jp-CodeCell")
    assert code_cells.count() == 4
    assert page.locator(".jp-CodeCell.jp-mod-noInput").count() == 4
    assert page.locator(".jp-CodeCell .jp-InputArea, .jp-InputPrompt, .cm-editor").count() == 0
    assert "@db.reactive" not in body and "rnb.connect" not in body
    assert "Traceback" not in body
    assert page.locator('[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0

    heads = {n: page.inner_text(f'.rnb-table[data-name="{n}"] .rnb-head') for n in TABLES}
    assert "15 rows" in heads["latest_messages"], heads
    assert "3 rows" in heads["agents_by_status"], heads
    assert "4 rows" in heads["messages_by_channel"], heads
    statuses = [row[1] for row in page.evaluate(_ROWS_JS, "agents_by_status")]
    assert statuses == ["busy", "idle", "offline"]
    channels = sorted(row[1] for row in page.evaluate(_ROWS_JS, "messages_by_channel"))
    assert channels == sorted(demo.CHANNELS)
    ids = [int(row[1]) for row in page.evaluate(_ROWS_JS, "latest_messages")]
    assert ids == sorted(ids, reverse=True) and len(ids) == 15  # newest first
    shot = view.screenshot("voila-dashboard", full_page=True)
    print(f"screenshot: {shot}")
    view.assert_no_console_errors()


def _channel_count(page: Any, channel: str) -> int:
    for row in page.evaluate(_ROWS_JS, "messages_by_channel"):
        if row[1] == channel:
            return int(row[2].replace(",", ""))
    raise AssertionError(f"no {channel!r} row in messages_by_channel")


def test_external_insert_reaches_the_dashboard(
    dashboard: Dashboard, writer: ExternalWriter
) -> None:
    view = dashboard.view
    page = view.page
    latencies: list[float] = []
    for n in range(INSERTS):
        channel = demo.CHANNELS[n % len(demo.CHANNELS)]
        before = _channel_count(page, channel)
        body = f"from the test process: voila #{n} {uuid.uuid4().hex[:8]}"
        key = f"latest_messages:{body}"
        page.wait_for_function(_QUIET_JS, arg=QUIET_MS, timeout=5000)
        page.evaluate("(k) => window.__rnb.watch.add(k)", key)
        committed = writer.insert_message(body, channel)
        page.wait_for_function("(k) => window.__rnb.seen[k]", arg=key, timeout=5000)
        seen: dict[str, Any] = page.evaluate("(k) => window.__rnb.seen[k]", key)
        latency = seen["t"] - committed * 1000.0
        print(f"commit -> DOM latency (voila): {latency:.1f} ms")
        assert 0 < latency < 5000, seen
        assert seen["pos"] == 0, seen  # newest message first
        assert seen["changed"], f"the new row is not highlighted: {seen}"
        assert seen["cells"][4] == channel, seen
        latencies.append(latency)
        # The low-priority aggregate follows the same write.
        page.wait_for_function(
            """([ch, n]) => Array.from(document.querySelectorAll(
                 '.rnb-table[data-name="messages_by_channel"] .rnb-row:not(.rnb-pending)'))
               .some((r) => r.children[1].textContent === ch
                     && Number(r.children[2].textContent.replace(/,/g, "")) === n)""",
            arg=[channel, before + 1],
            timeout=5000,
        )
    assert "15 rows" in page.inner_text('.rnb-table[data-name="latest_messages"] .rnb-head')
    LATENCY_LOG.parent.mkdir(parents=True, exist_ok=True)
    with LATENCY_LOG.open("a") as log:
        for ms in latencies:
            log.write(json.dumps({"test": "voila-external-insert", "latency_ms": round(ms, 1)})
                      + "\n")
    print(f"voila: {len(latencies)} inserts, commit -> DOM median "
          f"{statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms")
    view.screenshot("voila-dashboard-update", full_page=True)
    view.assert_no_console_errors()
