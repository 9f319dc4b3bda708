"""notebooks/tenant_dashboard.ipynb served by Voila in headless Chromium, fed by another
process: KPIs, the activity chart and the tables move when a write is committed, with no
interaction; picking another tenant swaps every panel to that tenant's data; no console
error. Saves the screenshot the README shows (docs/tenant_dashboard.png).

The database has reactive_nb's triggers, so the dashboard's kernel hears the test
process's plain ``sqlite3`` writes (``ExternalWriter``).
"""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
from demo_writer import ExternalWriter, demo_database

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = harness.REPO / "notebooks" / "tenant_dashboard.ipynb"
SCREENSHOT = harness.REPO / "docs" / "tenant_dashboard.png"
KPI = '.rnb-value[data-label="{}"] .rnb-value-number'
CHART = '.rnb-chart[data-name="activity"]'
FEED = '.rnb-table[data-name="feed"]'

_READY_JS = """() => {
  const kpi = document.querySelector('.rnb-value[data-label="Messages"] .rnb-value-number');
  const chart = document.querySelector('.rnb-chart[data-name="activity"]');
  const feed = document.querySelector('.rnb-table[data-name="feed"] .rnb-badge');
  return kpi && /[0-9]/.test(kpi.textContent) && chart && Number(chart.dataset.points) > 0
    && feed && feed.textContent === "fresh"
    && document.querySelector('.rnb-table[data-name="feed"] .rnb-row:not(.rnb-pending)');
}"""

_FEED_HAS_JS = """(text) => Array.from(document.querySelectorAll(
  '.rnb-table[data-name="feed"] .rnb-row:not(.rnb-pending)')).some(
  (r) => Array.from(r.children).some((c) => c.textContent === text))"""


def _count(path: Path, org: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM message WHERE organization_id = ?",
                                (org,)).fetchone()[0])


def _number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_database(tmp_path_factory.mktemp("tenant-db"))


@pytest.fixture(scope="module")
def voila(tmp_path_factory: pytest.TempPathFactory, database: Path) -> Iterator[harness.Voila]:
    env: dict[str, str | None] = {"REACTIVE_NB_URL": f"sqlite:///{database}",
                                  "REACTIVE_NB_REDIS": None}
    with harness.start_voila(tmp_path_factory.mktemp("voila"), NOTEBOOK, env=env) as server:
        yield server


def test_tenant_dashboard_moves_and_follows_the_tenant(voila: harness.Voila,
                                                       database: Path) -> None:
    view = voila.open()
    page = view.page
    page.wait_for_function(_READY_JS, timeout=60000)
    assert _number(page.inner_text(KPI.format("Messages"))) == _count(database, "acme")
    assert page.locator("h2", has_text="Organization: acme").count() == 1
    chart_before = float(page.get_attribute(CHART, "data-total") or "nan")
    assert page.locator(f"{CHART} rect.rnb-chart-bar").count() >= 8  # a bar per day and channel
    assert (page.locator(CHART).bounding_box() or {}).get("height", 0) > 200  # not collapsed

    # Another process commits: the KPI, the chart and the feed follow, nothing clicked.
    writer = ExternalWriter(database, "acme")
    try:
        body = f"from the test: {uuid.uuid4().hex[:8]}"
        writer.insert_message(body, "chat")
    finally:
        writer.close()
    expected = _count(database, "acme")
    try:
        page.wait_for_function(
            "([sel, n]) => document.querySelector(sel).textContent.replace(/,/g, '') === String(n)",
            arg=[KPI.format("Messages"), expected], timeout=30000)
    except Exception as exc:
        statuses = page.evaluate("() => Array.from(document.querySelectorAll("
                                 "'.rnb-badge, .rnb-value-status'), (b) => b.textContent)")
        raise AssertionError(f"the Messages KPI shows {page.inner_text(KPI.format('Messages'))}"
                             f", not {expected}; statuses {statuses}") from exc
    # (the chart shows the last 10 active days: a message on a new day moves the window)
    page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel).dataset.total) !== n",
        arg=[CHART, chart_before], timeout=30000)
    chart_after = float(page.get_attribute(CHART, "data-total") or "nan")
    page.wait_for_function(_FEED_HAS_JS, arg=body, timeout=30000)
    page.wait_for_function(
        "() => document.querySelector('.rnb-table[data-name=\"feed\"] .rnb-badge')"
        ".textContent === 'fresh'", timeout=30000)
    page.set_viewport_size({"width": 1400, "height": 1900})  # Voila scrolls inside the page
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(view.screenshot("tenant-dashboard"), SCREENSHOT)

    # The tenant picker swaps every panel to globex's data.
    page.select_option(".widget-dropdown select", "globex")
    globex = _count(database, "globex")
    page.wait_for_function(
        "([sel, n]) => document.querySelector(sel).textContent.replace(/,/g, '') === String(n)",
        arg=[KPI.format("Messages"), globex], timeout=30000)
    assert page.locator("h2", has_text="Organization: globex").count() == 1
    with sqlite3.connect(database) as conn:
        newest = conn.execute("SELECT body FROM message WHERE organization_id = 'globex' "
                              "ORDER BY id DESC LIMIT 1").fetchone()[0]
    page.wait_for_function(_FEED_HAS_JS, arg=newest, timeout=30000)
    assert not page.evaluate(_FEED_HAS_JS, body)  # acme's message is gone from the feed
    page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel).dataset.total) !== n",
        arg=[CHART, chart_after], timeout=30000)
    view.assert_no_console_errors()
