"""The demo database as browser tests use it: reactive_nb's triggers on every demo table,
and an external writer (plain sqlite3 in the test process) the kernel only hears through
those triggers."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import reactive_nb as rnb
from reactive_nb.ui import demo


def demo_database(folder: Path) -> Path:
    """Create the demo database in ``folder`` with triggers on every demo table."""
    path = folder / "demo.db"
    url = f"sqlite:///{path}"
    demo.create_demo(url)
    db = rnb.connect(url, capture="local")  # "local": no poller in the test process
    try:
        assert set(db.install_triggers(demo.TABLES)) >= set(demo.TABLES)
    finally:
        db.close()
    return path


class ExternalWriter:
    """Another process's writes, for the kernel: plain sqlite3 from the test process."""

    def __init__(self, path: Path, org: str) -> None:
        self.org = org
        self._conn = sqlite3.connect(path, timeout=10.0)
        self._agent, self._user = self._conn.execute(
            "SELECT (SELECT MIN(id) FROM agent WHERE organization_id = ?),"
            " (SELECT MIN(id) FROM users WHERE organization_id = ?)",
            (org, org),
        ).fetchone()

    def insert_message(self, body: str, channel: str = "chat") -> float:
        """Insert and commit a message of ``org``; returns the commit time (epoch s)."""
        now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
        self._conn.execute(
            "INSERT INTO message (organization_id, from_agent_id, user_id, channel, body,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (self.org, self._agent, self._user, channel, body, now),
        )
        self._conn.commit()
        return time.time()

    def close(self) -> None:
        self._conn.close()
