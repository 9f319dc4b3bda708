"""A tenant handle: ``acme = tenants.open("acme")``, whose every call runs as acme.

Each method enters ``db.tenant("acme")`` for its duration, so it is checked like any
tenant-scoped call (the tenant still exists, the user may still open it) and it reads and
writes acme's data: its own database when it has one, else the shared database (with its
tenant set for row-level security). The tenant is bound by the library, never taken from
a call's inputs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from reactive_nb.errors import ClosedError

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from reactive_nb.live.functions import Priority, ReactiveFunction
    from reactive_nb.live.query import LiveQuery


class HandleOwner(Protocol):
    """What a handle needs from its tenancy."""

    def scope(self, tenant: str) -> AbstractContextManager[str]: ...
    def database(self, tenant: str) -> str | None: ...
    def engine_for(self, tenant: str) -> Engine: ...
    def session_for(self, tenant: str, **kwargs: Any) -> Session: ...
    def read_sql(self, sql: Any, params: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> pd.DataFrame: ...
    def execute(self, sql: Any,
                params: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
                **kwargs: Any) -> int: ...


class TenantHandle:
    """One tenant's data, opened by ``Tenancy.open``; also a context manager
    (``with acme: agents(...)`` runs the block as acme)."""

    def __init__(self, owner: HandleOwner, tenant: str) -> None:
        self._owner = owner
        self.tenant = tenant
        self.closed = False
        self._entered = threading.local()  # per-thread stack of entered scopes

    def __repr__(self) -> str:
        where = self.database
        place = f"database {where!r}" if where else "the shared database"
        return f"<TenantHandle {self.tenant!r} on {place}{' closed' if self.closed else ''}>"

    @contextlib.contextmanager
    def _scope(self) -> Iterator[str]:
        if self.closed:
            raise ClosedError(f"the handle of tenant {self.tenant!r} is closed")
        with self._owner.scope(self.tenant) as tenant:
            yield tenant

    # -- where the data lives --------------------------------------------------------------

    @property
    def database(self) -> str | None:
        """The tenant's own database name, or None on the shared database."""
        return self._owner.database(self.tenant)

    @property
    def engine(self) -> Engine:
        """The engine holding the tenant's data (its own, or the main one)."""
        with self._scope():
            return self._owner.engine_for(self.tenant)

    # -- SQL -------------------------------------------------------------------------------

    def read_sql(self, sql: Any, params: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> pd.DataFrame:
        """``db.read_sql`` as this tenant."""
        with self._scope():
            return self._owner.read_sql(sql, params, **kwargs)

    def execute(self, sql: Any,
                params: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
                **kwargs: Any) -> int:
        """``db.execute`` as this tenant: captured and published as this tenant."""
        with self._scope():
            return self._owner.execute(sql, params, **kwargs)

    def session(self, **kwargs: Any) -> Session:
        """An ORM session on the tenant's data (on the shared database with ``rls=True``
        each of its transactions sets the tenant, wherever it is used)."""
        with self._scope():
            return self._owner.session_for(self.tenant, **kwargs)

    # -- reactive functions ----------------------------------------------------------------

    def call(self, fn: ReactiveFunction, /, *args: Any, **kwargs: Any) -> pd.DataFrame:
        """``fn(*args, **kwargs)`` as this tenant (cached per tenant)."""
        with self._scope():
            return fn(*args, **kwargs)

    def live(self, fn: ReactiveFunction, inputs: Mapping[str, Any] | None = None, /, *,
             priority: Priority | None = None, primary_key: Iterable[str] | None = None,
             **kwargs: Any) -> LiveQuery:
        """``fn.live(...)`` bound to this tenant."""
        with self._scope():
            return fn.live(inputs, priority=priority, tenant=self.tenant,
                           primary_key=primary_key, **kwargs)

    # -- as a block ------------------------------------------------------------------------

    def __enter__(self) -> TenantHandle:
        scope = self._scope()
        scope.__enter__()
        stack: list[AbstractContextManager[str]] = self._entered.__dict__.setdefault(
            "stack", [])
        stack.append(scope)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._entered.stack.pop().__exit__(*exc)

    def close(self) -> None:
        """Refuse further calls through this handle (live queries it made keep running:
        close them themselves)."""
        self.closed = True
