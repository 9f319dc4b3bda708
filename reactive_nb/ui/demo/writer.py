"""`DemoWriter`: simulated activity in the demo database, written through a ReactiveDB
so the writes are captured and live queries refresh."""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from reactive_nb.threads import Background
from reactive_nb.ui.demo.schema import CHANNELS, STATUSES, agent, message, message_body

if TYPE_CHECKING:
    from reactive_nb.db import ReactiveDB

logger = logging.getLogger(__name__)

WRITER_THREAD = "reactive_nb-demo-writer"


class DemoWriter:
    """Simulated activity: a thread that writes through a ReactiveDB every ``interval``.

    Most writes insert a message into a random organization; about one in four changes an
    agent's status. ``writes`` counts committed writes; ``first_write`` is set after the
    first one; ``tenants`` lists the organizations it writes as (known after ``start()``).
    Stop it with ``close()`` (joins the thread).
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
        #: the organizations with agents and users; each write is as one of them (start() sets it)
        self.tenants: list[str] = []
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
        self.tenants = sorted(set(self._agents) & set(self._users))
        if not self.tenants:
            raise ValueError("the demo writer found no organization with agents and users")
        self._thread.start()
        return self

    def step(self) -> None:
        """One write as the tenant of a random organization, in the calling thread."""
        rng = self._rng
        org = rng.choice(self.tenants)
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
            body = message_body(rng)
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
