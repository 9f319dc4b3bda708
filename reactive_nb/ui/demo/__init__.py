"""Demo data and activity for ``reactive-nb demo`` and the quickstart notebook.

``create_demo`` fills a database with realistic multi-tenant data (organizations, users,
agents, tools, messages: thousands of rows, deterministic for a seed) in one transaction.
``DemoWriter`` simulates activity -- new messages, agents changing status -- a few times
per second through a ReactiveDB, so the writes are captured and live queries refresh.
``write_quickstart`` writes the quickstart notebook (``notebooks/make_quickstart.py``).

The notebooks and the demo's users reach all of it as ``demo.NAME`` (``from
reactive_nb.ui import demo``); it lives in `schema`, `data`, `writer` and `notebooks`.
"""

from __future__ import annotations

from reactive_nb.ui.demo.data import count, create_demo, ensure_demo, has_demo
from reactive_nb.ui.demo.notebooks import (
    DEMO_NOTEBOOKS,
    QUICKSTART_CELLS,
    TENANT_DASHBOARD_CELLS,
    write_notebook,
    write_quickstart,
    write_tenant_dashboard,
)
from reactive_nb.ui.demo.schema import CHANNELS, ORGANIZATIONS, STATUSES, TABLES, metadata
from reactive_nb.ui.demo.writer import WRITER_THREAD, DemoWriter

__all__ = [
    "CHANNELS",
    "DEMO_NOTEBOOKS",
    "ORGANIZATIONS",
    "QUICKSTART_CELLS",
    "STATUSES",
    "TABLES",
    "TENANT_DASHBOARD_CELLS",
    "WRITER_THREAD",
    "DemoWriter",
    "count",
    "create_demo",
    "ensure_demo",
    "has_demo",
    "metadata",
    "write_notebook",
    "write_quickstart",
    "write_tenant_dashboard",
]
