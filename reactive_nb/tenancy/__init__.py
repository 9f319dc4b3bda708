"""Tenant databases and access control: ``db.tenancy(...)``.

The main database says which tenants exist and where their data lives; tenants with a
database of their own get an engine each, created on first use, whose writes are
captured as that tenant; ``access=`` decides which tenants the notebook's user may open,
and revoking a membership stops their live queries; ``rls=True`` sets the tenant on every
transaction on the shared database for PostgreSQL row-level security policies.

    tenants = db.tenancy(
        database="SELECT database_name FROM organization WHERE id = :tenant",
        url="postgresql+psycopg://127.0.0.1/{database}",
        access="SELECT 1 FROM membership WHERE user_id = :user AND organization_id = :tenant",
    )
    tenants.list()                 # the tenants this user may open
    acme = tenants.open("acme")    # acme.read_sql / execute / session / call / live
"""

from __future__ import annotations

from reactive_nb.tenancy.directory import Tenancy
from reactive_nb.tenancy.handle import TenantHandle
from reactive_nb.tenancy.listing import LIST_FUNCTION

__all__ = ["LIST_FUNCTION", "Tenancy", "TenantHandle"]
