"""Row-level security on the shared database: every transaction run as a tenant first
sets ``reactive_nb.tenant`` for that transaction only.

PostgreSQL policies written against the setting then filter rows even when a handler
forgets its ``WHERE``::

    ALTER TABLE agent ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant_rows ON agent
        USING (organization_id = current_setting('reactive_nb.tenant', true));

The value is bound (``set_config(name, :tenant, true)``), never formatted into SQL, and
transaction-local, so a pooled connection carries nothing over to its next user. Outside
any tenant ``current_setting(..., true)`` is NULL (or ``''`` on a connection that had it
set before) and such a policy returns no row: forgetting the tenant fails closed.
Superusers and table owners bypass RLS (unless ``FORCE ROW LEVEL SECURITY``): connect as
an ordinary role.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reactive_nb.errors import ConfigError
from reactive_nb.events import DEFAULT_TENANT
from reactive_nb.model.tenants import current_tenant
from reactive_nb.tenancy.resolve import INTERNAL

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.orm import Session

SETTING = "reactive_nb.tenant"
SET_TENANT = f"SELECT set_config('{SETTING}', :tenant, true)"


class RowSecurity:
    """Hooks the main engine's ``begin`` event (one listener: an engine event moves every
    statement of that engine onto SQLAlchemy's slower event path, so it is only there
    when ``rls=True``)."""

    def __init__(self, engine: Engine) -> None:
        from sqlalchemy import event, text

        if engine.dialect.name != "postgresql":
            raise ConfigError("tenancy(rls=True) needs PostgreSQL (row-level security and "
                              f"set_config); this database is {engine.dialect.name}")
        self._engine = engine
        self._statement = text(SET_TENANT)
        event.listen(engine, "begin", self._begin)
        self._closed = False

    def _begin(self, conn: Connection) -> None:
        tenant = current_tenant()
        if tenant != DEFAULT_TENANT:
            self.set_tenant(conn, tenant)

    def set_tenant(self, conn: Connection, tenant: str) -> None:
        """Set the transaction's tenant on ``conn`` (bound, transaction-local)."""
        conn.execute(self._statement, {"tenant": tenant}, execution_options=INTERNAL)

    def bind_session(self, session: Session, tenant: str) -> None:
        """Every transaction of ``session`` runs as ``tenant``, also when the session is
        used outside ``db.tenant(...)`` (a handle's session outlives its call)."""
        from sqlalchemy import event

        def after_begin(session: Any, transaction: Any, connection: Connection) -> None:
            if current_tenant() != tenant:
                self.set_tenant(connection, tenant)

        event.listen(session, "after_begin", after_begin)

    def close(self) -> None:
        from sqlalchemy import event

        if not self._closed:
            self._closed = True
            event.remove(self._engine, "begin", self._begin)
