"""``reactive-nb demo --headless``: a few per-tenant live queries, and one line in the
terminal for what each refresh changed while the demo writer writes."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from reactive_nb.ui.cli.common import PROG, clock, say

if TYPE_CHECKING:
    from reactive_nb.db import ReactiveDB
    from reactive_nb.live.query import LiveQuery
    from reactive_nb.ui.demo.writer import DemoWriter

LATEST_SQL = """
SELECT m.id, a.name AS agent, m.channel, m.body, m.created_at
FROM message m JOIN agent a ON a.id = m.from_agent_id
WHERE m.organization_id = :org
ORDER BY m.id DESC
LIMIT 20
"""
BY_STATUS_SQL = """
SELECT status, COUNT(*) AS agents FROM agent
WHERE organization_id = :org GROUP BY status ORDER BY status
"""
PER_ORG_SQL = """
SELECT o.id AS organization, COUNT(m.id) AS messages
FROM organization o LEFT JOIN message m ON m.organization_id = o.id
GROUP BY o.id ORDER BY o.id
"""


def run_headless(db: ReactiveDB, writer: DemoWriter, seconds: float) -> int:
    """Print what each refresh of a few per-tenant live queries changed while the writer
    writes as several tenants: a write as one tenant refreshes only that tenant's results
    (and the unscoped ones)."""
    queries = _demo_queries(db)
    lock = threading.Lock()
    updates = {"all": 0, "caused": 0}
    lives: list[LiveQuery] = []

    def printer(label: str) -> Any:
        previous: dict[str, Any] = {"df": None}

        def on_df(change: Any) -> None:
            live = change["owner"]
            df, old = change["new"], previous["df"]
            previous["df"] = df
            if df is None:
                return
            now = time.perf_counter()
            with lock:
                updates["all"] += 1
                if old is None:
                    say(f"[{clock()}] {label}: {len(df)} rows, {live.status}, run #1")
                    return
                updates["caused"] += 1
                what = _difference(old, df)
                committed = writer.last_commit.get(live.tenant)
                if committed is None and writer.last_commit:  # unscoped: the latest write
                    committed = max(writer.last_commit.values())
                after = f" ({(now - committed[0]) * 1000:.1f} ms after commit)" if committed else ""
                say(f"[{clock()}] {label}: {what}{after}")
        return on_df

    try:
        for label, fn, inputs, tenant in queries:
            live = fn.live(**inputs, tenant=tenant)
            live.observe(printer(label), names=["df"])
            lives.append(live)
        for live in lives:
            live.wait(timeout=30)
        writer.start()
        say(f"[{clock()}] writer started ({1 / writer.interval:.0f} writes/s, as "
            f"{len(writer.tenants)} tenants); watching {len(lives)} live queries for "
            f"{seconds:g} s (--seconds N; Ctrl-C to stop)")
        started = time.monotonic()
        try:
            threading.Event().wait(seconds)
        except KeyboardInterrupt:
            say("interrupted")
        elapsed = time.monotonic() - started
        writer.close()
    finally:
        for live in lives:
            live.close()
    with lock:
        caused, total = updates["caused"], updates["all"]
    say(f"summary: {len(lives)} live queries, {total} refreshes ({caused} caused by the "
        f"writer's {writer.writes} writes: {writer.messages} messages, "
        f"{writer.status_changes} agent status changes) in {elapsed:.1f} s")
    if caused < 1:
        say(f"{PROG} demo: no live update arrived after a write", file=sys.stderr)
        return 1
    return 0


def _difference(old: Any, new: Any) -> str:
    """What changed between two frames, in a few words: new rows by id (with their body),
    else the changed cells of a small frame."""
    if "id" in new.columns and "id" in old.columns:
        added = new[~new["id"].isin(set(old["id"]))]
        if len(added):
            first = str(added["body"].iloc[0]) if "body" in added.columns else ""
            shown = f' "{first}"' if first else ""
            return f"+{len(added)} row{'s' if len(added) > 1 else ''}{shown}"
    if len(old.columns) == 2 and len(new.columns) == 2 and list(old.columns) == list(new.columns):
        before = dict(zip(old.iloc[:, 0], old.iloc[:, 1], strict=True))
        after = dict(zip(new.iloc[:, 0], new.iloc[:, 1], strict=True))
        moved = [f"{k} {before.get(k, 0)}->{after.get(k, 0)}"
                 for k in sorted({*before, *after}, key=str)
                 if before.get(k, 0) != after.get(k, 0)]
        if moved:
            return ", ".join(moved)
    if old.equals(new):
        return "re-ran, same rows"
    return f"{len(new)} rows, changed"


def _demo_queries(db: ReactiveDB) -> list[tuple[str, Any, dict[str, Any], str | None]]:
    @db.reactive(name="messages.latest")
    def latest(org: str) -> Any:
        return db.read_sql(LATEST_SQL, org=org)

    @db.reactive(name="agents.by_status")
    def by_status(org: str) -> Any:
        return db.read_sql(BY_STATUS_SQL, org=org)

    @db.reactive(name="messages.per_org")
    def per_org() -> Any:
        return db.read_sql(PER_ORG_SQL)

    return [  # (label, function, inputs, tenant): the tenant is the organization
        ("messages.latest(acme)", latest, {"org": "acme"}, "acme"),
        ("messages.latest(globex)", latest, {"org": "globex"}, "globex"),
        ("agents.by_status(acme)", by_status, {"org": "acme"}, "acme"),
        ("messages.per_org()", per_org, {}, None),
    ]
