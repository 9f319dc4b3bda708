"""Tenants: the namespace every version, cache entry and change lives in.

A tenant is an organization whose data is separated either by a column (``tenant_column``)
or by a database of its own. Code runs "as" a tenant inside ``db.tenant("acme")``; outside
any such block the tenant is ``DEFAULT_TENANT``. When tenants are registered, naming an
unknown one is an error (``TenantNotFound``) rather than an empty dashboard.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

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

    def add(self, tenant: str, engine: Engine | None = None) -> None:
        with self._lock:
            self._engines[tenant] = engine

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._engines)

    def check(self, tenant: str) -> str:
        """Return ``tenant`` if it may be used; raise TenantNotFound (with a suggestion) if not."""
        if not isinstance(tenant, str) or not tenant or "{" in tenant or "}" in tenant:
            # Redis keys carry the tenant as a cluster hash tag: rnb:{tenant}:versions
            raise ValueError(f"invalid tenant name {tenant!r}: a non-empty string "
                             "without '{' or '}'")
        with self._lock:
            open_registry = not self._engines
            known = tenant in self._engines
            names = list(self._engines)
        if open_registry or known or tenant == DEFAULT_TENANT:
            return tenant
        raise TenantNotFound(tenant, names)

    def engine(self, tenant: str) -> Engine | None:
        """The tenant's own engine, or None when it shares the main database."""
        with self._lock:
            return self._engines.get(tenant)
