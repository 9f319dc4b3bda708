"""Tenants: the namespace every version, cache entry and change lives in.

A tenant is an organization whose data is separated either by a column (``tenant_column``)
or by a database of its own. Code runs "as" a tenant inside ``db.tenant("acme")``; outside
any such block the tenant is ``DEFAULT_TENANT``. When tenants are registered, naming an
unknown one is an error (``TenantNotFound``) rather than an empty dashboard.

When ``db.tenancy(...)`` is configured, a ``TenantDirectory`` (``reactive_nb.tenancy``)
answers instead: which tenants exist (from the main database), where their data lives
(their own engine, created lazily) and whether this user may open them.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from reactive_nb.errors import TenantNotFound
from reactive_nb.events import DEFAULT_TENANT

if TYPE_CHECKING:
    from sqlalchemy import Engine

_current: contextvars.ContextVar[str] = contextvars.ContextVar(
    "reactive_nb_tenant", default=DEFAULT_TENANT
)


def current_tenant() -> str:
    """The tenant the calling code runs as."""
    return _current.get()


def use_tenant(tenant: str) -> None:
    """Make ``tenant`` the current one in this context from now on (no block: for a
    notebook's ``%reactive tenant``); ``as_tenant`` is the scoped form."""
    _current.set(tenant)


class TenantDirectory(Protocol):
    """Where tenants come from when the registry is not a fixed list (``db.tenancy``)."""

    def check(self, tenant: str) -> None:
        """Raise TenantNotFound (unknown, or its database is missing) or TenantAccessDenied
        (this user may not open it); return if the tenant may be used."""
        ...

    def engine(self, tenant: str) -> Engine | None:
        """The tenant's own engine (checked like ``check``), or None on the shared database."""
        ...

    def names(self) -> list[str]:
        """The tenants this user may open."""
        ...


@contextlib.contextmanager
def as_tenant(tenant: str) -> Iterator[str]:
    """Run the block as ``tenant`` (restored afterwards, per thread and per task)."""
    token = _current.set(tenant)
    try:
        yield tenant
    finally:
        _current.reset(token)


class TenantRegistry:
    """Known tenants and, for tenants with a database of their own, its engine.

    Empty means "open": any tenant name is accepted (single-tenant use, or tenants by column
    discovered from the data). ``_lock`` guards the dict; it is held only to read or replace it.
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._engines: dict[str, Engine | None] = dict.fromkeys(names)
        self._directory: TenantDirectory | None = None

    def use(self, directory: TenantDirectory | None) -> None:
        """Let ``directory`` decide which tenants exist, where they live and who may open
        them (None: back to the fixed list). Engines added by hand still win."""
        with self._lock:
            self._directory = directory

    def add(self, tenant: str, engine: Engine | None = None) -> None:
        with self._lock:
            self._engines[tenant] = engine

    def names(self) -> list[str]:
        with self._lock:
            directory, names = self._directory, sorted(self._engines)
        return directory.names() if directory is not None else names

    def check(self, tenant: str) -> str:
        """Return ``tenant`` if it may be used; raise TenantNotFound (with a suggestion) if not."""
        if not isinstance(tenant, str) or not tenant or "{" in tenant or "}" in tenant:
            # Redis keys carry the tenant as a cluster hash tag: rnb:{tenant}:versions
            raise ValueError(f"invalid tenant name {tenant!r}: a non-empty string "
                             "without '{' or '}'")
        if tenant == DEFAULT_TENANT:
            return tenant
        with self._lock:
            accepted = not self._engines or tenant in self._engines
            directory = self._directory
        if directory is not None:
            directory.check(tenant)
            return tenant
        if accepted:
            return tenant
        with self._lock:
            names = list(self._engines)
        raise TenantNotFound(tenant, names)

    def engine(self, tenant: str) -> Engine | None:
        """The tenant's own engine, or None when it shares the main database. With a
        directory this is a tenant-scoped use: it is checked (exists, may be opened)."""
        with self._lock:
            engine, directory = self._engines.get(tenant), self._directory
        if directory is None or tenant == DEFAULT_TENANT:
            return engine
        if engine is not None:  # added by hand: still checked
            directory.check(tenant)
            return engine
        return directory.engine(tenant)
