"""Write notebooks/dashboard.ipynb, a live dashboard meant for Voila (outputs empty).

The cells live here, as data, so the notebook is reproducible and reviewable as code;
tests/browser/test_voila_browser.py checks the file is current and serves it with Voila.

Run from the repository root: python notebooks/make_dashboard.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "dashboard.ipynb"

#: (cell type, source) of every cell, in order. No cell blocks or sleeps: live queries
#: load in the background and their tables fill in as the results arrive.
DASHBOARD_CELLS: list[tuple[str, str]] = [
    ("markdown", """\
# Support activity, live

Latest messages, agents by status and message volume per channel for one organization.
Every table refreshes by itself when the database is written -- by this server, another
kernel, a web app or `psql` (through reactive_nb's triggers) -- with no page reload.

Serve it with `voila notebooks/dashboard.ipynb`; the database comes from the environment
variable `REACTIVE_NB_URL` (default `sqlite:///demo.db`)."""),
    ("code", """\
import os

import ipywidgets as widgets

import reactive_nb as rnb
from reactive_nb.ui import demo

URL = os.environ.get("REACTIVE_NB_URL", "sqlite:///demo.db")
demo.ensure_demo(URL)  # an empty database gets the demo data
db = rnb.connect(URL)"""),
    ("code", """\
@db.reactive(dependencies=["message", "agent", "users"], priority="high")
def latest_messages(organization_id: str, limit: int = 15):
    \"\"\"The newest messages of an organization, with agent and customer names.\"\"\"
    return db.read_sql(
        "SELECT m.id, a.name AS agent, u.name AS customer, m.channel, m.body, m.created_at "
        "FROM message m "
        "JOIN agent a ON a.id = m.from_agent_id "
        "JOIN users u ON u.id = m.user_id "
        "WHERE m.organization_id = :org ORDER BY m.id DESC LIMIT :limit",
        org=organization_id, limit=limit,
    )


@db.reactive(dependencies=["agent"])
def agents_by_status(organization_id: str):
    \"\"\"How many of the organization's agents are idle, busy or offline.\"\"\"
    return db.read_sql(
        "SELECT status, COUNT(*) AS agents FROM agent "
        "WHERE organization_id = :org GROUP BY status ORDER BY status",
        org=organization_id,
    )


@db.reactive(dependencies=["message"], priority="low")
def messages_by_channel(organization_id: str):
    \"\"\"Message volume per channel, busiest first.\"\"\"
    return db.read_sql(
        "SELECT channel, COUNT(*) AS messages, MAX(created_at) AS latest FROM message "
        "WHERE organization_id = :org GROUP BY channel ORDER BY messages DESC, channel",
        org=organization_id,
    )"""),
    ("code", """\
ORGANIZATION = "acme"  # the organization this dashboard shows

# After a write, refresh the message feed first, the aggregates after it.
db.priorities(["latest_messages", "agents_by_status", "messages_by_channel"])

latest = latest_messages.live(organization_id=ORGANIZATION)
latest.primary_key = ("id",)  # new messages are highlighted as they arrive
by_status = agents_by_status.live(organization_id=ORGANIZATION)
by_channel = messages_by_channel.live(organization_id=ORGANIZATION)"""),
    ("code", """\
def panel(title, live):
    return widgets.VBox([widgets.HTML(f"<h3>{title}</h3>"), live.widget()])


widgets.VBox([
    widgets.HTML(f"<h2>Organization: {ORGANIZATION}</h2>"),
    panel("Latest messages", latest),
    widgets.HBox([panel("Agents by status", by_status),
                  panel("Messages per channel", by_channel)]),
])"""),
]


def write_dashboard(path: str | Path = NOTEBOOK) -> Path:
    """Write the dashboard notebook (outputs empty) to ``path``."""
    from reactive_nb.ui.demo import write_notebook

    return write_notebook(DASHBOARD_CELLS, path, "dashboard")


if __name__ == "__main__":
    print(write_dashboard())
