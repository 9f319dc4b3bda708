"""Who may open which tenant: the ``access=`` query, asked for the notebook's user.

``access`` is a query with ``:user`` and ``:tenant`` that returns a row when the user may
open the tenant (``SELECT 1 FROM membership WHERE user_id = :user AND organization_id =
:tenant``). Decisions are remembered for ``ttl`` seconds, so the check on every call costs
a dict lookup; they are forgotten at once when a table the query reads changes (the
``Tenancy`` subscribes to the bus), which is how a revoked membership stops a live query.
"""

from __future__ import annotations

import getpass
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from reactive_nb.errors import TenantAccessDenied
from reactive_nb.events import DEFAULT_TENANT
from reactive_nb.model.tenants import as_tenant
from reactive_nb.tenancy.resolve import INTERNAL

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, TextClause


def default_user() -> str:
    """The notebook's user: ``$JUPYTERHUB_USER`` (set by JupyterHub for the single-user
    server), else the operating-system user."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


class AccessControl:
    """Cached answers of the access query for one user.

    ``_lock`` guards ``_decisions`` and ``_generation`` (dict operations only; queries run
    without it). An answer computed across an ``invalidate`` is returned but not stored,
    so a membership revoked while the query ran is not remembered as granted.
    """

    def __init__(self, engine: Engine, sql: str, user: str, *, ttl: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine.execution_options(**INTERNAL)
        self.sql = sql
        self.user = user
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._decisions: dict[str, tuple[bool, float]] = {}
        self._generation = 0
        #: Access queries run so far (tests and the benchmark read it).
        self.queries = 0

    def tables(self, dialect: str | None) -> frozenset[str]:
        """Tables the access query reads: a change to one re-checks every decision."""
        from reactive_nb.model.sql import analyze

        return analyze(self.sql, dialect).reads

    def check(self, tenant: str) -> None:
        """Return if the user may open ``tenant``; raise TenantAccessDenied if not."""
        if not self.allowed(tenant):
            raise TenantAccessDenied(self.user, tenant)

    def allowed(self, tenant: str) -> bool:
        """The cached decision while it is younger than ``ttl``, else a fresh one."""
        now = self._clock()
        with self._lock:
            cached = self._decisions.get(tenant)
            if cached is not None and cached[1] > now:
                return cached[0]
        return self.ask([tenant])[tenant]

    def ask(self, tenants: Iterable[str], user: str | None = None) -> dict[str, bool]:
        """Fresh decisions (one connection for all), remembered when asked for our user."""
        from sqlalchemy import text

        names = list(dict.fromkeys(tenants))
        who = self.user if user is None else user
        with self._lock:
            generation = self._generation
        statement = text(self.sql)
        answers: dict[str, bool] = {}
        # As the unscoped tenant: the directory's own read of the main database.
        with as_tenant(DEFAULT_TENANT), self._engine.connect() as conn:
            for tenant in names:
                answers[tenant] = _granted(conn, statement, who, tenant)
        expires = self._clock() + self.ttl
        with self._lock:
            self.queries += len(names)
            if generation == self._generation and who == self.user:
                for tenant, granted in answers.items():
                    self._decisions[tenant] = (granted, expires)
        return answers

    def invalidate(self) -> None:
        """A table the access query reads changed: forget every decision."""
        with self._lock:
            self._generation += 1
            self._decisions.clear()


def _granted(conn: Connection, statement: TextClause, user: str, tenant: str) -> bool:
    return conn.execute(statement, {"user": user, "tenant": tenant}).first() is not None
