"""The demo's data: created in one transaction, deterministic for a seed, and counted."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, func, inspect, select, text

from reactive_nb.ui.demo.schema import (
    AGENT_NAMES,
    CHANNELS,
    FIRST,
    LAST,
    MODELS,
    ORGANIZATIONS,
    ROLES,
    STATUSES,
    TABLES,
    TOOLS,
    message_body,
    metadata,
)

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
            "body": message_body(rng),
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
