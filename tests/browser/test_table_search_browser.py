"""The live table's search box, page size and height in a real JupyterLab and Chromium.

A stand-in live query (rnb_standin.py) of 1,000 rows, 12 of which say "Needle". Typing
in the search box sends one debounced message; Python filters the whole frame and the
flush thread pushes the matches: the header says "12 of 1,000", only matching rows are
shown, sorting applies to the matches, and clearing the box shows every row again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import harness
import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NAME = "needles.all"
SETUP = f"""\
import pandas as pd
from rnb_standin import StandinSource

from reactive_nb.ui.widgets import LiveTable

ids = range(1_000)
frame = pd.DataFrame({{"id": ids, "text": ["a Needle here" if i % 84 == 0 else "hay"
                                          for i in ids]}})
source = StandinSource("{NAME}", frame)
LiveTable(source, page_size=30, height=300)"""

_ROWS_JS = """(name) => Array.from(
  document.querySelectorAll(`.rnb-table[data-name="${name}"] .rnb-row:not(.rnb-pending)`),
  (r) => Array.from(r.children, (c) => c.textContent)
)"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Lab]:
    with harness.start_lab(tmp_path_factory.mktemp("lab")) as lab:
        yield lab


@pytest.fixture(scope="module")
def table_page(lab: harness.Lab, tmp_path_factory: pytest.TempPathFactory,
               ) -> Iterator[harness.NotebookPage]:
    path = Path(tmp_path_factory.mktemp("nb")) / "table_search.ipynb"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}  # else Lab asks which kernel
    nbformat.write(notebook, path)
    nb = lab.open(path)
    nb.page.wait_for_selector(f'.rnb-table[data-name="{NAME}"] .rnb-row:not(.rnb-pending)')
    yield nb
    nb.assert_no_console_errors()


def test_search_filters_in_python_and_combines_with_sort(
        table_page: harness.NotebookPage) -> None:
    page = table_page.page
    table = page.locator(f'.rnb-table[data-name="{NAME}"]')
    table.scroll_into_view_if_needed()
    count = table.locator(".rnb-count")
    assert count.inner_text() == "1,000 rows"
    # height=300: the scroll box has the height asked for, whatever the rows.
    assert table.locator(".rnb-scroll").evaluate("(e) => e.offsetHeight") == 300

    table.locator(".rnb-search").fill("needle")
    page.wait_for_function(
        """(name) => document.querySelector(`.rnb-table[data-name="${name}"] .rnb-count`)
             .textContent === "12 of 1,000" """, arg=NAME, timeout=5000)
    page.wait_for_function(
        """(name) => document.querySelectorAll(
             `.rnb-table[data-name="${name}"] .rnb-row:not(.rnb-pending)`).length === 12""",
        arg=NAME, timeout=5000)
    rows = page.evaluate(_ROWS_JS, NAME)
    assert [r[1] for r in rows] == [str(i) for i in range(0, 1_000, 84)]
    assert all(r[2] == "a Needle here" for r in rows), rows
    table_page.screenshot("table-search")

    header = table.locator(".rnb-col", has_text=re.compile(r"^id$"))
    header.click()  # ascending
    header.click()  # descending: the matches, largest id first
    page.wait_for_function(
        """(name) => {
          const row = document.querySelector(
            `.rnb-table[data-name="${name}"] .rnb-row:not(.rnb-pending)`);
          return row && row.children[1].textContent === "924";
        }""", arg=NAME, timeout=5000)
    assert count.inner_text() == "12 of 1,000"
    rows = page.evaluate(_ROWS_JS, NAME)
    assert [r[1] for r in rows] == [str(i) for i in range(924, -1, -84)]

    table.locator(".rnb-search").fill("")
    page.wait_for_function(
        """(name) => document.querySelector(`.rnb-table[data-name="${name}"] .rnb-count`)
             .textContent === "1,000 rows" """, arg=NAME, timeout=5000)
    page.wait_for_function(
        """(name) => {
          const row = document.querySelector(
            `.rnb-table[data-name="${name}"] .rnb-row:not(.rnb-pending)`);
          return row && row.children[1].textContent === "999";
        }""", arg=NAME, timeout=5000)
    table_page.assert_no_console_errors()
