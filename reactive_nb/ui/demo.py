"""Demo data and activity for ``reactive-nb demo`` and the quickstart notebook.

``create_demo`` fills a database with realistic multi-tenant data (organizations, users,
agents, tools, messages: thousands of rows, deterministic for a seed) in one transaction.
``DemoWriter`` simulates activity -- new messages, agents changing status -- a few times
per second through a ReactiveDB, so the writes are captured and live queries refresh.
``write_quickstart`` writes the quickstart notebook (``notebooks/make_quickstart.py``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    inspect,
    select,
    text,
)

from reactive_nb.threads import Background

if TYPE_CHECKING:
    from reactive_nb.db import ReactiveDB

logger = logging.getLogger(__name__)

WRITER_THREAD = "reactive_nb-demo-writer"

ORGANIZATIONS = [
    ("acme", "Acme Corp", "enterprise"),
    ("globex", "Globex", "team"),
    ("initech", "Initech", "team"),
    ("umbrella", "Umbrella", "enterprise"),
    ("hooli", "Hooli", "starter"),
]
ROLES = ["support", "sales", "research", "ops", "billing", "triage"]
STATUSES = ["idle", "busy", "offline"]
MODELS = ["small-2", "medium-3", "large-4"]
TOOLS = ["search", "crm.lookup", "calendar", "refund", "translate", "sql", "email", "slack"]
CHANNELS = ["chat", "email", "slack", "phone"]
FIRST = ["Ada", "Bob", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kai",
         "Lena", "Mo", "Noor", "Omar", "Pia", "Quinn", "Rui", "Sara", "Tom"]
LAST = ["Lovelace", "Ng", "Okafor", "Silva", "Berg", "Haddad", "Kim", "Novak", "Rossi", "Sato"]
AGENT_NAMES = ["Atlas", "Beacon", "Cosmo", "Delta", "Echo", "Flux", "Gizmo", "Halo", "Iris",
               "Juno", "Kite", "Lumen", "Milo", "Nova", "Orbit", "Pixel", "Quill", "Rex"]
SUBJECTS = ["the invoice", "my order", "the refund", "our contract", "the API key", "login",
            "the dashboard", "shipping", "the export", "a bug report", "the meeting", "SSO"]
VERBS = ["Question about", "Update on", "Problem with", "Follow-up on", "Escalating",
         "Thanks for", "Reminder about", "Need help with"]

metadata = MetaData()

organization = Table(
    "organization", metadata,
    Column("id", String(20), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("plan", String(20), nullable=False),
    Column("created_at", DateTime, nullable=False),
)
users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True),
    Column("organization_id", String(20), ForeignKey("organization.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("email", String(200), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Index("ix_users_org", "organization_id"),
)
agent = Table(
    "agent", metadata,
    Column("id", Integer, primary_key=True),
    Column("organization_id", String(20), ForeignKey("organization.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("role", String(40), nullable=False),
    Column("status", String(20), nullable=False),
    Column("model", String(40), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_agent_org", "organization_id"),
)
tool = Table(
    "tool", metadata,
    Column("id", Integer, primary_key=True),
    Column("organization_id", String(20), ForeignKey("organization.id"), nullable=False),
    Column("agent_id", Integer, ForeignKey("agent.id"), nullable=False),
    Column("name", String(50), nullable=False),
    Column("calls", Integer, nullable=False),
    Index("ix_tool_org", "organization_id"),
)
message = Table(
    "message", metadata,
    Column("id", Integer, primary_key=True),
    Column("organization_id", String(20), ForeignKey("organization.id"), nullable=False),
    Column("from_agent_id", Integer, ForeignKey("agent.id"), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Index("ix_message_org_id", "organization_id", "id"),
)

#: The demo's tables, parents first.
TABLES = [t.name for t in metadata.sorted_tables]

_EPOCH = datetime(2026, 1, 1, 9, 0, 0)


def _engine(url_or_engine: str | Engine) -> tuple[Engine, bool]:
    if isinstance(url_or_engine, Engine):
        return url_or_engine, False
    return create_engine(url_or_engine), True


def has_demo(url_or_engine: str | Engine) -> bool:
    """True when the database already has the demo's tables."""
    engine, owned = _engine(url_or_engine)
    try:
        return inspect(engine).has_table("organization")
    finally:
        if owned:
            engine.dispose()


def ensure_demo(url_or_engine: str | Engine, *, seed: int = 7) -> bool:
    """Create the demo data unless the database has it already; True when created."""
    if has_demo(url_or_engine):
        return False
    create_demo(url_or_engine, seed=seed)
    return True


def create_demo(url_or_engine: str | Engine, *, seed: int = 7, users_per_org: int = 40,
                agents_per_org: int = 24, messages_per_org: int = 1200) -> dict[str, int]:
    """Create the demo tables and fill them (one transaction); returns rows per table.

    The same seed gives the same rows. Writes go through a plain engine: loading the demo
    is not a change anyone watches yet.
    """
    rng = random.Random(seed)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    user_ids: dict[str, list[int]] = {}
    agent_ids: dict[str, list[int]] = {}
    for n, (org, name, plan) in enumerate(ORGANIZATIONS):
        rows["organization"].append({"id": org, "name": name, "plan": plan,
                                     "created_at": _EPOCH - timedelta(days=400 - 30 * n)})
        user_ids[org] = []
        for _ in range(users_per_org):
            uid = len(rows["users"]) + 1
            first, last = rng.choice(FIRST), rng.choice(LAST)
            rows["users"].append({
                "id": uid, "organization_id": org, "name": f"{first} {last}",
                "email": f"{first}.{last}{uid}@{org}.example".lower(),
                "created_at": _EPOCH - timedelta(days=rng.randint(1, 365)),
            })
            user_ids[org].append(uid)
        agent_ids[org] = []
        for i in range(agents_per_org):
            aid = len(rows["agent"]) + 1
            created = _EPOCH - timedelta(days=rng.randint(1, 200))
            rows["agent"].append({
                "id": aid, "organization_id": org,
                "name": f"{AGENT_NAMES[i % len(AGENT_NAMES)]}-{i // len(AGENT_NAMES) + 1}",
                "role": rng.choice(ROLES), "status": rng.choice(STATUSES),
                "model": rng.choice(MODELS), "created_at": created, "updated_at": created,
            })
            agent_ids[org].append(aid)
            for tool_name in rng.sample(TOOLS, rng.randint(1, 4)):
                rows["tool"].append({
                    "id": len(rows["tool"]) + 1, "organization_id": org, "agent_id": aid,
                    "name": tool_name, "calls": rng.randint(0, 5000),
                })
    span = 30 * 24 * 3600  # messages spread over the 30 days before the epoch, in id order
    total = messages_per_org * len(ORGANIZATIONS)
    for mid in range(1, total + 1):
        org = ORGANIZATIONS[rng.randrange(len(ORGANIZATIONS))][0]
        rows["message"].append({
            "id": mid, "organization_id": org, "from_agent_id": rng.choice(agent_ids[org]),
            "user_id": rng.choice(user_ids[org]), "channel": rng.choice(CHANNELS),
            "body": _body(rng),
            "created_at": _EPOCH - timedelta(seconds=span * (total - mid) // total),
        })
    engine, owned = _engine(url_or_engine)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            for table in metadata.sorted_tables:
                if rows[table.name]:
                    conn.execute(table.insert(), rows[table.name])
            if engine.dialect.name == "postgresql":
                for name in ("users", "agent", "tool", "message"):
                    # Explicit ids leave the serial sequences behind: move them past.
                    conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                      f"(SELECT MAX(id) FROM {name}))"))
    finally:
        if owned:
            engine.dispose()
    return {name: len(found) for name, found in rows.items()}


def _body(rng: random.Random) -> str:
    return f"{rng.choice(VERBS)} {rng.choice(SUBJECTS)} (#{rng.randint(1000, 9999)})"


class DemoWriter:
    """Simulated activity: a thread that writes through a ReactiveDB every ``interval``.

    Most writes insert a message into a random organization; about one in four changes an
    agent's status. ``writes`` counts committed writes; ``first_write`` is set after the
    first one. Stop it with ``close()`` (joins the thread).
    """

    def __init__(self, db: ReactiveDB, *, interval: float = 0.25, seed: int | None = None,
                 organizations: list[str] | None = None) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.db = db
        self.interval = interval
        self.writes = 0
        self.messages = 0
        self.status_changes = 0
        self.first_write = threading.Event()
        #: organization -> (time.perf_counter() just after its last commit, what it wrote)
        self.last_commit: dict[str, tuple[float, str]] = {}
        self._rng = random.Random(seed)
        self._organizations = organizations
        self._agents: dict[str, list[int]] = {}
        self._users: dict[str, list[int]] = {}
        self._thread = Background(WRITER_THREAD, self._run)
        self._started = False

    def start(self) -> DemoWriter:
        """Read the agents and users to write about, then start the thread."""
        if self._started:
            return self
        self._started = True
        for name, found in (("agent", self._agents), ("users", self._users)):
            frame = self.db.read_sql(f"SELECT id, organization_id FROM {name} ORDER BY id")
            for ident, org in zip(frame["id"], frame["organization_id"], strict=True):
                if self._organizations is None or org in self._organizations:
                    found.setdefault(str(org), []).append(int(ident))
        self._orgs = sorted(set(self._agents) & set(self._users))
        if not self._orgs:
            raise ValueError("the demo writer found no organization with agents and users")
        self._thread.start()
        return self

    def step(self) -> None:
        """One write as the tenant of a random organization, in the calling thread."""
        rng = self._rng
        org = rng.choice(self._orgs)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        if rng.random() < 0.25:
            status = rng.choice(STATUSES)
            statement: Any = (agent.update()
                              .where(agent.c.id == rng.choice(self._agents[org]))
                              .values(status=status, updated_at=now))
            with self.db.tenant(org):  # a write as this tenant refreshes only its results
                self.db.execute(statement)
            self.last_commit[org] = (time.perf_counter(), f"an agent is now {status}")
            self.status_changes += 1
        else:
            body = _body(rng)
            with self.db.tenant(org):
                self.db.execute(message.insert().values(
                    organization_id=org, from_agent_id=rng.choice(self._agents[org]),
                    user_id=rng.choice(self._users[org]), channel=rng.choice(CHANNELS),
                    body=body, created_at=now))
            self.last_commit[org] = (time.perf_counter(), body)
            self.messages += 1
        self.writes += 1
        self.first_write.set()

    def _run(self, stop: threading.Event) -> None:
        from reactive_nb.errors import ClosedError

        while not stop.wait(self.interval):
            try:
                self.step()
            except ClosedError:
                return
            except Exception:
                logger.exception("the demo writer failed to write; trying again")

    def close(self) -> None:
        """Stop and join the thread (idempotent)."""
        self._thread.stop()

    def __enter__(self) -> DemoWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def count(url_or_engine: str | Engine, table_name: str = "message") -> int:
    """Rows of a demo table (for summaries)."""
    engine, owned = _engine(url_or_engine)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(
                metadata.tables[table_name])).scalar_one())
    finally:
        if owned:
            engine.dispose()


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
