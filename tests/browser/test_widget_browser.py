"""LiveTable in a real JupyterLab and headless Chromium.

widget_demo.ipynb shows two stand-in live queries (rnb_standin.py): `agents.getAll`
(40 rows, primary key `id`) and `events.all` (1,000,000 rows). The test process changes
`agents` through a control socket served by a thread in the kernel: no cell runs. Tests
run in file order on one notebook; the busy-kernel test is last because it leaves the
kernel busy for a while.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

import harness
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = Path(__file__).with_name("widget_demo.ipynb")
AGENTS = "agents.getAll"
EVENTS = "events.all"

# Records, with browser timestamps (epoch ms), each status a table's badge shows and the
# first appearance of watched rows ("name:id"), from a MutationObserver: nothing is missed
# between two polls of the test.
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
      for (const row of table.querySelectorAll(".rnb-row:not(.rnb-pending)")) {
        const cell = row.children[1];
        const key = `${name}:${cell ? cell.textContent : ""}`;
        if (state.watch.has(key) && !(key in state.seen)) {
          state.seen[key] = { t, changed: row.classList.contains("rnb-changed") };
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

_EXECUTION_COUNTS_JS = """() => {
  const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
  const out = [];
  for (let i = 0; i < cells.length; i++) out.push(cells.get(i).executionCount ?? null);
  return out;
}"""

# Rows of a table as [view position, first cell text, pending?].
_ROWS_JS = """(name) => Array.from(
  document.querySelectorAll(`.rnb-table[data-name="${name}"] .rnb-row`),
  (r) => [Number(r.dataset.pos), r.children[1].textContent, r.classList.contains("rnb-pending")]
)"""


class KernelControl:
    """The test's end of the kernel's control socket (rnb_standin.Control)."""

    def __init__(self, root: Path) -> None:
        info = json.loads((root / "control.json").read_text())
        self._conn: Connection = Client(
            (info["host"], info["port"]), authkey=bytes.fromhex(info["authkey"])
        )

    def call(self, **command: Any) -> dict[str, Any]:
        self._conn.send(command)
        assert self._conn.poll(15.0), f"no answer from the kernel to {command}"
        reply: dict[str, Any] = self._conn.recv()
        assert reply["ok"], reply
        return reply

    def close(self) -> None:
        self._conn.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Lab]:
    with harness.start_lab(tmp_path_factory.mktemp("lab")) as lab:
        yield lab


@pytest.fixture(scope="module")
def demo(lab: harness.Lab) -> Iterator[harness.NotebookPage]:
    t0 = time.monotonic()
    nb = lab.open(NOTEBOOK)
    print(f"\nnotebook opened and ran in {time.monotonic() - t0:.1f} s")
    nb.page.wait_for_selector(f'.rnb-table[data-name="{EVENTS}"] .rnb-row')
    nb.page.evaluate(_OBSERVE_JS)
    yield nb
    nb.assert_no_console_errors()


@pytest.fixture(scope="module")
def control(lab: harness.Lab, demo: harness.NotebookPage) -> Iterator[KernelControl]:
    ctl = KernelControl(lab.root)
    yield ctl
    ctl.close()


def insert_and_watch(
    nb: harness.NotebookPage, control: KernelControl, new_id: int
) -> tuple[float, dict[str, Any]]:
    """Insert agent `new_id` from outside the cells; return (commit -> DOM ms, row info)."""
    key = f"{AGENTS}:{new_id}"
    nb.page.evaluate("(k) => window.__rnb.watch.add(k)", key)
    committed = control.call(op="insert", source="agents", id=new_id, delay=0.3)["committed"]
    nb.page.wait_for_function("(k) => window.__rnb.seen[k]", arg=key, timeout=5000)
    seen: dict[str, Any] = nb.page.evaluate("(k) => window.__rnb.seen[k]", key)
    return seen["t"] - committed * 1000.0, seen


def test_update_reaches_the_dom_without_running_a_cell(
    demo: harness.NotebookPage, control: KernelControl
) -> None:
    page = demo.page
    header = page.locator(f'.rnb-table[data-name="{AGENTS}"] .rnb-head')
    assert "40 rows" in header.inner_text()
    counts = page.evaluate(_EXECUTION_COUNTS_JS)
    page.evaluate("(n) => { window.__rnb.statuses[n] = []; }", AGENTS)
    latency, seen = insert_and_watch(demo, control, 1001)
    print(f"\ncommit -> DOM latency (kernel idle): {latency:.1f} ms")
    assert latency < 5000
    assert seen["changed"], "the new row is not highlighted"
    statuses = [s for s, _ in page.evaluate("(n) => window.__rnb.statuses[n]", AGENTS)]
    assert "refreshing" in statuses and statuses[-1] == "fresh", statuses
    assert statuses.index("refreshing") < len(statuses) - 1
    assert "41 rows" in header.inner_text()
    assert page.evaluate(_EXECUTION_COUNTS_JS) == counts  # no cell ran
    assert re.search(r"updated \d+ s ago", header.inner_text())
    page.locator(f'.rnb-table[data-name="{AGENTS}"]').scroll_into_view_if_needed()
    demo.screenshot("widget-update")
    demo.assert_no_console_errors()


def test_widget_reports_visibility(demo: harness.NotebookPage, control: KernelControl) -> None:
    table = demo.page.locator(f'.rnb-table[data-name="{AGENTS}"]')
    table.scroll_into_view_if_needed()
    reply = control.call(op="wait_report", source="agents", value=True, timeout=5.0)
    assert reply["found"], f"no visible=True report reached Python: {reply['reports']}"


def test_million_rows_scroll_and_sort(demo: harness.NotebookPage) -> None:
    page = demo.page
    table = page.locator(f'.rnb-table[data-name="{EVENTS}"]')
    table.scroll_into_view_if_needed()
    assert "1,000,000 rows" in table.locator(".rnb-head").inner_text()
    scroll_to = """([name, fraction]) => {
      const box = document.querySelector(`.rnb-table[data-name="${name}"] .rnb-scroll`);
      box.scrollTop = (box.scrollHeight - box.clientHeight) * fraction;
    }"""
    all_loaded_near = """([name, lo, hi]) => {
      const rows = document.querySelectorAll(`.rnb-table[data-name="${name}"] .rnb-row`);
      if (!rows.length) return false;
      const first = Number(rows[0].dataset.pos);
      return first >= lo && first <= hi
        && Array.from(rows).every((r) => !r.classList.contains("rnb-pending"));
    }"""
    t0 = time.monotonic()
    page.evaluate(scroll_to, [EVENTS, 0.5])
    page.wait_for_function(all_loaded_near, arg=[EVENTS, 499_980, 500_000], timeout=5000)
    print(f"\nscroll to the middle of 1M rows -> rows shown in {time.monotonic() - t0:.2f} s")
    rows = page.evaluate(_ROWS_JS, EVENTS)
    assert len(rows) >= 10
    assert all(text == str(pos) for pos, text, _ in rows), rows  # id == position
    demo.screenshot("widget-1m-middle")

    # Sorting happens in Python: descending by id puts 999,999 - position at each place.
    header = table.locator(".rnb-col", has_text=re.compile(r"^id$"))
    header.click()  # ascending
    header.click()  # descending
    page.wait_for_function(
        """(name) => {
          const rows = document.querySelectorAll(`.rnb-table[data-name="${name}"] .rnb-row`);
          return rows.length > 0 && Array.from(rows).every((r) =>
            !r.classList.contains("rnb-pending")
            && r.children[1].textContent === String(999999 - Number(r.dataset.pos)));
        }""",
        arg=EVENTS,
        timeout=5000,
    )
    page.evaluate(scroll_to, [EVENTS, 0.0])
    page.wait_for_function(all_loaded_near, arg=[EVENTS, 0, 0], timeout=5000)
    assert page.evaluate(_ROWS_JS, EVENTS)[0][1] == "999999"
    header.click()  # back to frame order
    page.wait_for_function(
        """(name) => {
          const row = document.querySelector(`.rnb-table[data-name="${name}"] .rnb-row`);
          return row && row.children[1].textContent === "0";
        }""",
        arg=EVENTS,
        timeout=5000,
    )
    demo.assert_no_console_errors()


def test_update_arrives_while_another_cell_is_busy(
    demo: harness.NotebookPage, control: KernelControl
) -> None:
    page = demo.page
    cell = demo.start_cell('import time\nprint("sleeping", flush=True)\ntime.sleep(8)')
    page.wait_for_function(
        """(i) => {
          const c = window.jupyterapp.shell.currentWidget.content.model.cells.get(i);
          return c.outputs.length > 0 && c.executionCount === null;
        }""",
        arg=cell,
        timeout=10000,
    )
    assert "sleeping" in demo.cell_state(cell)["text"]  # the kernel is inside time.sleep
    page.evaluate("(n) => { window.__rnb.statuses[n] = []; }", AGENTS)
    latency, _ = insert_and_watch(demo, control, 1002)
    print(f"\ncommit -> DOM latency (kernel busy in time.sleep): {latency:.1f} ms")
    assert demo.cell_state(cell)["execution_count"] is None  # the sleeping cell still runs
    statuses = [s for s, _ in page.evaluate("(n) => window.__rnb.statuses[n]", AGENTS)]
    assert "refreshing" in statuses and statuses[-1] == "fresh", statuses
    page.locator(f'.rnb-table[data-name="{AGENTS}"]').scroll_into_view_if_needed()
    demo.screenshot("widget-update-while-busy")
    demo.assert_no_console_errors()
