"""A small multi-tenant schema (organizations, agents, messages, tools) for tests."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import create_engine, text

SCHEMA = [
    "CREATE TABLE organization (id VARCHAR(20) PRIMARY KEY, name VARCHAR(100) NOT NULL)",
    """CREATE TABLE agent (id INTEGER PRIMARY KEY, organization_id VARCHAR(20) NOT NULL,
        name VARCHAR(100) NOT NULL, role VARCHAR(40), created_at INTEGER DEFAULT 0)""",
    """CREATE TABLE message (id INTEGER PRIMARY KEY, organization_id VARCHAR(20) NOT NULL,
        from_agent_id INTEGER, body TEXT)""",
    "CREATE TABLE tool (id INTEGER PRIMARY KEY, organization_id VARCHAR(20), name VARCHAR(50))",
    "CREATE TABLE audit (id INTEGER PRIMARY KEY, note TEXT)",
]

ROWS = [
    "INSERT INTO organization VALUES ('acme', 'Acme'), ('globex', 'Globex')",
    """INSERT INTO agent (id, organization_id, name, role) VALUES
        (1, 'acme', 'ada', 'admin'), (2, 'acme', 'bob', 'support'),
        (3, 'globex', 'cy', 'admin')""",
    "INSERT INTO message VALUES (1, 'acme', 1, 'hello'), (2, 'globex', 3, 'hi')",
    "INSERT INTO tool VALUES (1, 'acme', 'search')",
]


def create(url: str) -> None:
    """Create and fill the schema with a plain engine (not captured by reactive_nb)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        for stmt in SCHEMA + ROWS:
            conn.execute(text(stmt))
    engine.dispose()


def define_agents(db: Any) -> Any:
    """``agents.byOrg``: the same reactive function in the test process and subprocesses."""

    @db.reactive(name="agents.byOrg", dependencies=["agent"])
    def agents(organization_id: str) -> Any:
        return db.read_sql("SELECT id, name FROM agent WHERE organization_id = :o ORDER BY id",
                           o=organization_id)

    return agents


def define_agents_inferred(db: Any) -> Any:
    """``agents.inferred``: like ``define_agents``, its dependencies inferred from its runs."""

    @db.reactive(name="agents.inferred")
    def agents(organization_id: str) -> Any:
        return db.read_sql("SELECT id, name FROM agent WHERE organization_id = :o ORDER BY id",
                           o=organization_id)

    return agents


def wait_for(live: Any, predicate: Any, timeout: float = 15.0) -> None:
    """Block until ``predicate(live.df)`` holds, woken by ``df`` changes (no polling)."""
    hit = threading.Event()

    def check(_: object = None) -> None:
        if live.df is not None and predicate(live.df):
            hit.set()

    live.observe(check, names=["df"])
    check()
    try:
        assert hit.wait(timeout), f"condition not met; df was\n{live.df}"
    finally:
        live.unobserve(check, names=["df"])
