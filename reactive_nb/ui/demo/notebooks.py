"""The demo notebooks, as cells: the quickstart and the tenant dashboard, written with
empty outputs and stable cell ids (``notebooks/make_*.py`` and ``reactive-nb demo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# -- the quickstart notebook ---------------------------------------------------------------

QUICKSTART_CELLS: list[tuple[str, str]] = [
    ("markdown", """\
# reactive_nb quickstart

Tables that keep themselves current. A `%%reactive` cell turns SQL into a live table:
when a table it reads is written -- by this notebook, another kernel, a web app or
`psql` -- it refreshes by itself, in the background, while you keep working.

The database comes from the environment variable `REACTIVE_NB_URL` (default
`sqlite:///demo.db`), so the notebook carries no credentials. `reactive-nb demo` sets it
and keeps writing to the database while you watch."""),
    ("code", "%load_ext reactive_nb"),
    ("code", """\
import os

from reactive_nb.ui import demo

os.environ.setdefault("REACTIVE_NB_URL", "sqlite:///demo.db")
if demo.ensure_demo(os.environ["REACTIVE_NB_URL"]):  # an empty database gets demo data
    print("created demo data in", os.environ["REACTIVE_NB_URL"])"""),
    ("markdown", """\
`%reactive connect` without a URL reads `REACTIVE_NB_URL` (and `REACTIVE_NB_REDIS`).
The connection is the variable `rnb_db`."""),
    ("code", "%reactive connect"),
    ("markdown", """\
`:org` below is bound from the variable `org`: sent as a bound parameter, never pasted
into the SQL. The live query is the variable `latest_messages`."""),
    ("code", 'org = "acme"'),
    ("code", """\
%%reactive latest_messages --key id --priority high
SELECT m.id, a.name AS agent, u.name AS customer, m.channel, m.body, m.created_at
FROM message m
JOIN agent a ON a.id = m.from_agent_id
JOIN users u ON u.id = m.user_id
WHERE m.organization_id = :org
ORDER BY m.id DESC
LIMIT 20"""),
    ("code", """\
%%reactive agents_by_status
SELECT status, COUNT(*) AS agents
FROM agent
WHERE organization_id = :org
GROUP BY status
ORDER BY status"""),
    ("markdown", """\
Write a row: both tables above update on their own (no cell to re-run)."""),
    ("code", """\
rnb_db.execute(
    "INSERT INTO message (organization_id, from_agent_id, user_id, channel, body, created_at) "
    "VALUES (:org, (SELECT MIN(id) FROM agent WHERE organization_id = :org), "
    "(SELECT MIN(id) FROM users WHERE organization_id = :org), 'chat', :body, CURRENT_TIMESTAMP)",
    {"org": org, "body": "Hello from the quickstart"},
)
latest_messages.wait(timeout=10)
latest_messages.df.head(3)"""),
    ("code", "%reactive status"),
    ("markdown", """\
## Tenants

Every organization is a tenant: its cache entries, version counters and changes are its
own. `%reactive tenant NAME` makes the next cells run as that tenant, so a write made as
one organization never refreshes another's tables. (With `rnb_db.tenancy(...)` tenants may
live in databases of their own, and the same magic checks that you may open them.)"""),
    ("code", '%reactive tenant globex\norg = "globex"'),
    ("code", """\
%%reactive globex_agents --key id
SELECT id, name, status FROM agent WHERE organization_id = :org ORDER BY id"""),
    ("markdown", """\
A write made as `acme` does not even attempt a refresh of `globex`'s live query:"""),
    ("code", """\
globex_agents.wait(timeout=10)
before = globex_agents.attempts
with rnb_db.tenant("acme"):
    rnb_db.execute("UPDATE agent SET updated_at = CURRENT_TIMESTAMP WHERE organization_id = 'acme'")
assert globex_agents.attempts == before
%reactive tenant --none"""),
]


# -- the tenant dashboard (notebooks/make_tenant_dashboard.py writes it) ----------------------

TENANT_DASHBOARD_CELLS: list[tuple[str, str]] = [
    ("markdown", """\
# Tenant dashboard, live

Pick a tenant: every number, chart and table below follows it, and refreshes by itself
whenever the database is written -- by `reactive-nb demo`'s writer, another kernel, a web
app or `psql` -- with no cell to run and no page reload.

The database comes from `REACTIVE_NB_URL` (default `sqlite:///demo.db`); `reactive-nb demo
--voila` sets it and serves this notebook with Voila."""),
    ("code", """\
import os

import ipywidgets as widgets

import reactive_nb as rnb
from reactive_nb.ui import demo

URL = os.environ.get("REACTIVE_NB_URL", "sqlite:///demo.db")
demo.ensure_demo(URL)  # an empty database gets the demo data
db = rnb.connect(URL)
# Messages per day: SQLite stores timestamps as text, PostgreSQL as timestamps.
DAY = ("substr(created_at, 1, 10)" if db.engine.dialect.name == "sqlite"
       else "to_char(created_at, 'YYYY-MM-DD')")"""),
    ("code", """\
@db.reactive(dependencies=["message"], priority="high")
def totals(organization_id: str):
    \"\"\"Messages and the customers who wrote them.\"\"\"
    return db.read_sql(
        "SELECT COUNT(*) AS messages, COUNT(DISTINCT user_id) AS customers "
        "FROM message WHERE organization_id = :org", org=organization_id)


@db.reactive(dependencies=["agent"])
def agents(organization_id: str):
    \"\"\"The organization's agents, most recently changed first.\"\"\"
    return db.read_sql(
        "SELECT id, name, role, status, model, updated_at FROM agent "
        "WHERE organization_id = :org ORDER BY updated_at DESC, id", org=organization_id)


@db.reactive(dependencies=["agent"])
def busy_agents(organization_id: str):
    return db.read_sql(
        "SELECT COUNT(*) AS busy FROM agent WHERE organization_id = :org AND status = 'busy'",
        org=organization_id)


@db.reactive(dependencies=["message"], priority="low")
def per_channel(organization_id: str):
    \"\"\"Message volume per channel, busiest first.\"\"\"
    return db.read_sql(
        "SELECT channel, COUNT(*) AS messages, MAX(created_at) AS latest FROM message "
        "WHERE organization_id = :org GROUP BY channel ORDER BY messages DESC, channel",
        org=organization_id)


@db.reactive(dependencies=["message"], priority="low")
def activity(organization_id: str, days: int = 10):
    \"\"\"Messages per day and channel over the organization's last active days.\"\"\"
    return db.read_sql(
        f"SELECT {DAY} AS day, channel, COUNT(*) AS messages FROM message "
        f"WHERE organization_id = :org AND {DAY} IN (SELECT DISTINCT {DAY} FROM message "
        f"WHERE organization_id = :org ORDER BY 1 DESC LIMIT :days) "
        "GROUP BY 1, 2 ORDER BY 1, 2", org=organization_id, days=days)


@db.reactive(dependencies=["message", "agent", "users"], priority="high")
def feed(organization_id: str, limit: int = 12):
    \"\"\"The newest messages, with agent and customer names.\"\"\"
    return db.read_sql(
        "SELECT m.id, m.created_at, a.name AS agent, u.name AS customer, m.channel, m.body "
        "FROM message m JOIN agent a ON a.id = m.from_agent_id "
        "JOIN users u ON u.id = m.user_id "
        "WHERE m.organization_id = :org ORDER BY m.id DESC LIMIT :limit",
        org=organization_id, limit=limit)"""),
    ("code", """\
tenants = db.read_sql("SELECT id FROM organization ORDER BY id")["id"].tolist()
TENANT = "acme" if "acme" in tenants else tenants[0]

# One live query per panel, each bound to the tenant: a write as another tenant
# never re-runs them. The feed first after a write, the aggregates after it.
db.priorities(["feed", "totals", "busy_agents", "agents", "per_channel", "activity"])
lives = {fn.name: fn.live(organization_id=TENANT, tenant=TENANT)
         for fn in (totals, busy_agents, agents, per_channel, activity, feed)}
lives["feed"].primary_key = ("id",)  # new messages are highlighted as they arrive
lives["agents"].primary_key = ("id",)"""),
    ("code", """\
picker = widgets.Dropdown(options=tenants, value=TENANT, description="Tenant")
title = widgets.HTML(f"<h2>Organization: {TENANT}</h2>")


def switch(change):
    \"\"\"Every panel follows the picked tenant (its last frame stays until the new one).\"\"\"
    org = change["new"]
    title.value = f"<h2>Organization: {org}</h2>"
    for live in lives.values():
        live.rebind({**live.inputs, "organization_id": org}, tenant=org)


picker.observe(switch, names="value")


def panel(heading, widget, side_by_side=False):
    layout = widgets.Layout(flex="1 1 0", min_width="0") if side_by_side else None
    return widgets.VBox([widgets.HTML(f"<h3>{heading}</h3>"), widget],
                        **({"layout": layout} if layout else {}))


widgets.VBox([
    widgets.HBox([title, picker], layout=widgets.Layout(justify_content="space-between")),
    widgets.HBox([
        lives["totals"].value("messages", label="Messages"),
        lives["totals"].value("customers", label="Customers who wrote"),
        lives["busy_agents"].value("busy", label="Agents busy"),
    ], layout=widgets.Layout(gap="12px")),
    panel("Activity per day", lives["activity"].chart(
        x="day", y="messages", color="channel", kind="bar", title="Messages per day")),
    widgets.HBox([panel("Agents", lives["agents"].widget(), side_by_side=True),
                  panel("Messages per channel", lives["per_channel"].widget(),
                        side_by_side=True)]),
    panel("Activity feed", lives["feed"].widget()),
])"""),
]


def write_quickstart(path: str | Path) -> Path:
    """Write the quickstart notebook (outputs empty) to ``path``."""
    return write_notebook(QUICKSTART_CELLS, path, "quickstart")


def write_tenant_dashboard(path: str | Path) -> Path:
    """Write the tenant dashboard notebook (outputs empty) to ``path``."""
    return write_notebook(TENANT_DASHBOARD_CELLS, path, "tenant-dashboard")


#: The notebooks ``reactive-nb demo`` puts in its working folder, and their writers.
DEMO_NOTEBOOKS = {"quickstart.ipynb": write_quickstart,
                  "tenant_dashboard.ipynb": write_tenant_dashboard}


def write_notebook(cells: list[tuple[str, str]], path: str | Path, prefix: str) -> Path:
    """Write ``(kind, source)`` cells as a notebook with empty outputs and stable cell ids
    (``<prefix>-NN``), so a regenerated notebook diffs cleanly."""
    import importlib

    nbformat: Any = importlib.import_module("nbformat")  # untyped: keep mypy strict quiet
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for n, (kind, source) in enumerate(cells):
        cell = (nbformat.v4.new_markdown_cell(source) if kind == "markdown"
                else nbformat.v4.new_code_cell(source))
        cell["id"] = f"{prefix}-{n:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(target))
    return target
