"""The notebooks run headless in a real kernel (nbclient): no cell fails, the live table
is displayed as a widget, and a write from a cell reaches the live query."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import reactive_nb as rnb
from reactive_nb.ui import demo
from reactive_nb.ui.cli.demo_command import install_demo_triggers
from reactive_nb.ui.demo import QUICKSTART_CELLS

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "notebooks" / "quickstart.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The kernel's environment: this checkout importable, home folders in tmp_path."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    for name in ("IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("REACTIVE_NB_REDIS", raising=False)
    return tmp_path


def test_quickstart_file_is_clean_and_generated() -> None:
    nb = nbformat.read(QUICKSTART, as_version=4)
    assert [c.source for c in nb.cells] == [source for _, source in QUICKSTART_CELLS], (
        "notebooks/quickstart.ipynb is out of date: run python notebooks/make_quickstart.py")
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_quickstart_runs_headless(kernel_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REACTIVE_NB_URL", f"sqlite:///{kernel_env}/quickstart.db")
    nb = nbformat.read(QUICKSTART, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=60,
                   resources={"metadata": {"path": str(kernel_env)}}).execute()

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert errors == []
    cells = {c.source.splitlines()[0]: c for c in nb.cells if c.cell_type == "code"}
    reactive = cells["%%reactive latest_messages --key id --priority high"]
    assert any(WIDGET in o.get("data", {}) for o in reactive.outputs), reactive.outputs
    created = cells["import os"]
    assert "created demo data" in "".join(o.get("text", "") for o in created.outputs)
    write = next(c for c in nb.cells if c.source.startswith("rnb_db.execute("))
    shown = write.outputs[-1]["data"]["text/plain"]
    assert "Hello from the quickstart" in shown  # the write reached the live query
    status = cells["%reactive status"].outputs[-1]["data"]["text/plain"]
    assert "latest_messages" in status and "agents_by_status" in status


WAIT_FOR_A_REFRESH = """\
import threading

heard = threading.Event()
latest_messages.observe(lambda change: heard.set(), names=["runs"])
assert heard.wait(20), latest_messages.status
print("refreshed by another process")"""


def test_quickstart_kernel_follows_the_demo_writer(
        kernel_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `reactive-nb demo` does: its writer, in another process, writes the database;
    the notebook's live query refreshes through the triggers the demo installs."""
    url = f"sqlite:///{kernel_env}/demo.db"
    demo.create_demo(url)
    install_demo_triggers(url)
    monkeypatch.setenv("REACTIVE_NB_URL", url)
    nb = nbformat.read(QUICKSTART, as_version=4)
    cut = next(i for i, c in enumerate(nb.cells) if c.source.startswith("%%reactive latest"))
    nb.cells = [*nb.cells[:cut + 1], nbformat.v4.new_code_cell(WAIT_FOR_A_REFRESH)]
    db = rnb.connect(url, capture="local")
    writer = demo.DemoWriter(db, interval=0.05, organizations=["acme"])
    try:
        writer.start()
        NotebookClient(nb, kernel_name="python3", timeout=60,
                       resources={"metadata": {"path": str(kernel_env)}}).execute()
    finally:
        writer.close()
        db.close()
    assert "refreshed by another process" in nb.cells[-1].outputs[0]["text"]


def test_tenant_dashboard_file_is_clean_and_generated() -> None:
    nb = nbformat.read(ROOT / "notebooks" / "tenant_dashboard.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in nb.cells] == demo.TENANT_DASHBOARD_CELLS, (
        "notebooks/tenant_dashboard.ipynb is out of date: "
        "run python notebooks/make_tenant_dashboard.py")
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
            assert "sleep" not in cell.source  # no cell may block the dashboard


def test_tenant_dashboard_runs_headless(kernel_env: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cell runs; the last shows the dashboard layout (a widget) with no error."""
    url = f"sqlite:///{kernel_env / 'demo.db'}"
    demo.create_demo(url)
    monkeypatch.setenv("REACTIVE_NB_URL", url)
    nb = nbformat.read(ROOT / "notebooks" / "tenant_dashboard.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(kernel_env)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"], outputs
    assert WIDGET in nb.cells[-1].outputs[-1]["data"]


STATIC_SETUP = """\
import sqlite3
import reactive_nb as rnb

with sqlite3.connect("items.db") as con:
    con.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, n INTEGER)")
    con.executemany("INSERT INTO item VALUES (?, ?, ?)",
                    [(i, f"name-{i:03d}", i * 10) for i in range(25)])
db = rnb.connect("sqlite:///items.db")
again = rnb.connect("sqlite:///items.db")  # the same database: no second notice

@db.reactive(name="items", dependencies=["item"])
def items():
    return db.read_sql("SELECT * FROM item ORDER BY id")

live = items.live()
live.wait()"""


def test_static_snapshots_where_no_widget_runs(kernel_env: Path) -> None:
    """nbconvert shows the widget view only when the widget state is saved; otherwise the
    text/html snapshot: the first rows, the status and "updated at", never the object's
    repr. Also: connect() says once, in the notebook, that other processes are not heard."""
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(STATIC_SETUP),
        nbformat.v4.new_code_cell("live"),
        nbformat.v4.new_code_cell('live.chart(x="id", y="n")'),
        nbformat.v4.new_code_cell('live.value("count", label="Items")'),
    ])
    NotebookClient(nb, kernel_name="python3", timeout=60,
                   resources={"metadata": {"path": str(kernel_env)}}).execute()
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert errors == []
    said = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert said.count("will not be seen") == 1, said
    assert "db.install_triggers()" in said and "redis=" in said
    for cell in nb.cells[1:]:
        data = cell.outputs[-1]["data"]
        assert WIDGET in data and "text/html" in data

    # nbclient (like `jupyter nbconvert --execute`) saved the widget state: the page
    # renders the widget views from it.
    assert nb.metadata["widgets"]
    page, _ = HTMLExporter().from_notebook_node(nb)
    assert 'type="application/vnd.jupyter.widget-view+json"' in page
    # Without saved widget state (GitHub, a notebook saved without it): the snapshots.
    del nb.metadata["widgets"]
    page, _ = HTMLExporter().from_notebook_node(nb)
    assert " object at 0x" not in page
    assert 'type="application/vnd.jupyter.widget-view+json"' not in page
    table = page[page.index('class="rnb-static"'):]
    assert "name-000" in table and "name-009" in table and "name-010" not in table
    assert "fresh" in table and "updated at 20" in table and "25 rows" in table
    assert "Items: 25" in page  # the KPI
    assert '<th style="text-align:left">n</th>' in page  # the chart's columns
