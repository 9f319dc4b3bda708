"""``Tenancy``: tenants resolved from the main database, their engines, capture and access.

``db.tenancy(...)`` builds one and installs it as the ReactiveDB's tenant directory, so
every tenant-scoped use goes through it: ``db.tenant(t)``, ``fn(...)`` and ``fn.live(...)``
(via ``check_tenant``), each refresh a worker runs, and ``read_sql`` / ``execute`` /
``session`` as a tenant (via the tenant's engine). It delegates to specialists:
``Resolver`` (which tenants exist, which database holds each), ``EnginePool`` (one lazy
engine per tenant database), ``TenantCaptures`` (capture of those databases),
``AccessControl`` (who may open what), ``RowSecurity`` (RLS on the shared database) and
``Rechecker`` (stopping the live queries of tenants that are gone or no longer allowed
when the directory's tables change); ``Tenancy.list()`` and ``live()`` go through the
reactive function of ``listing``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from reactive_nb.errors import (
    ClosedError,
    ConfigError,
    TenantAccessDenied,
    TenantNotFound,
    one_line,
)
from reactive_nb.events import ALL_TABLES, DEFAULT_TENANT, Change
from reactive_nb.live.functions import Owner as FunctionOwner
from reactive_nb.model.tenants import TenantRegistry, as_tenant, use_tenant
from reactive_nb.tenancy.access import AccessControl, default_user
from reactive_nb.tenancy.capture import TenantCaptures
from reactive_nb.tenancy.engines import EnginePool
from reactive_nb.tenancy.handle import TenantHandle
from reactive_nb.tenancy.listing import list_function
from reactive_nb.tenancy.options import check_options
from reactive_nb.tenancy.recheck import Rechecker
from reactive_nb.tenancy.resolve import Resolver

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from reactive_nb.changes import ChangeRecorder
    from reactive_nb.live.functions import ReactiveFunction
    from reactive_nb.live.query import LiveQuery
    from reactive_nb.live.scheduler import Scheduler
    from reactive_nb.model.relations import LiveCatalog
    from reactive_nb.settings import Settings
    from reactive_nb.tenancy.rls import RowSecurity

logger = logging.getLogger(__name__)

#: ``Tenancy.list`` shadows the builtin inside the class body.
Names = list[str]


class Owner(FunctionOwner, Protocol):
    """What a tenancy needs from its ReactiveDB."""

    engine: Engine
    tenants: TenantRegistry
    recorder: ChangeRecorder
    scheduler: Scheduler
    catalog: LiveCatalog
    settings: Settings

    @property
    def functions(self) -> dict[str, ReactiveFunction]: ...
    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]: ...
    def install_triggers(self, tables: Iterable[str] | None = None) -> list[str]: ...
    def tenant(self, tenant: str) -> AbstractContextManager[str]: ...
    def read_sql(self, sql: Any, params: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> pd.DataFrame: ...
    def execute(self, sql: Any,
                params: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
                **kwargs: Any) -> int: ...


class Tenancy:
    """Tenants of a ReactiveDB, resolved from its main database (``db.tenancy(...)``).

    ``database``: a query with ``:tenant`` returning the tenant's own database name (NULL:
    it lives on the main database; no row: unknown tenant). ``url``: the template of those
    databases' URLs (``{database}`` is replaced by that name, once checked to be a plain
    identifier; default: the main database's URL with the name changed). ``access``: a
    query with ``:user`` and ``:tenant`` returning a row when the user may open the tenant
    (checked on every tenant-scoped call, cached ``access_ttl`` seconds, re-checked when
    its tables change). ``user``: default ``$JUPYTERHUB_USER``, then the OS user. ``rls``:
    every transaction run as a tenant on the main database first sets
    ``reactive_nb.tenant`` (for RLS policies). ``list`` (``list_sql`` here): the query
    listing tenants (first column), derived from ``database`` by default. Tenant engines
    hold at most ``pool_size + max_overflow`` connections each and release them after
    ``idle_timeout`` idle seconds.
    """

    def __init__(self, owner: Owner, *, database: str | None = None, url: str | None = None,
                 access: str | None = None, user: str | None = None, rls: bool = False,
                 list_sql: str | None = None, access_ttl: float = 10.0,
                 idle_timeout: float = 300.0, pool_size: int = 2, max_overflow: int = 2,
                 background: bool | None = None) -> None:
        from reactive_nb.model.sql import sqlglot_dialect

        check_options(database=database, url=url, access=access, user=user,
                      list_sql=list_sql, access_ttl=access_ttl, idle_timeout=idle_timeout,
                      pool_size=pool_size, max_overflow=max_overflow)
        self._owner = owner
        self.user = user if user is not None else default_user()
        dialect = sqlglot_dialect(owner.engine.dialect.name)
        self.resolver = Resolver(owner.engine, database=database, list_sql=list_sql,
                                 dialect=dialect)
        self.access = (AccessControl(owner.engine, access, self.user, ttl=access_ttl)
                       if access is not None else None)
        self._directory_tables = owner.resolve_tables(
            self.resolver.tables(dialect), "tenancy(database=, list=)")
        self._access_tables = (owner.resolve_tables(self.access.tables(dialect),
                                                    "tenancy(access=)")
                               if self.access is not None else frozenset())
        self.captures = TenantCaptures(
            owner.recorder, lambda name: owner.catalog.current.canonical(name),
            self._volatile, owner.settings.capture)
        self.engines = EnginePool(owner.engine, url, hook=self.captures.hook,
                                  pool_size=pool_size, max_overflow=max_overflow,
                                  idle_timeout=idle_timeout)
        self._list_fn = (list_function(owner, self.resolver, self.access,
                                       sorted(self._directory_tables | self._access_tables))
                         if self.resolver.list_sql is not None else None)
        self._rls: RowSecurity | None = None
        if rls:  # last of what may fail: it hooks the main engine
            from reactive_nb.tenancy.rls import RowSecurity

            self._rls = RowSecurity(owner.engine)
        run_thread = owner.settings.workers > 0 if background is None else background
        self._rechecker = Rechecker(
            owner.scheduler, self.resolver, self.access, self.engines,
            directory_tables=self._directory_tables, access_tables=self._access_tables,
            follow=self._follow, background=run_thread)
        self.closed = False
        self._unsubscribe = owner.subscribe(self._rechecker.on_change)
        self._unwatch = owner.scheduler.watch_tenants(self._follow, self._unfollow)
        owner.tenants.use(self)
        self._rechecker.start()

    def __repr__(self) -> str:
        return (f"<Tenancy user={self.user!r} engines={len(self.engines.tenants())} "
                f"listening={len(self.captures.listening())}>")

    # -- the user's entry points -----------------------------------------------------------

    def open(self, tenant: str) -> TenantHandle:
        """A handle on ``tenant``'s data; raises TenantNotFound (unknown tenant, or its
        database does not exist) or TenantAccessDenied, having run no tenant SQL."""
        self._check_open()
        self._owner.tenants.check(tenant)
        return TenantHandle(self, tenant)

    def use(self, tenant: str | None) -> TenantHandle | None:
        """Make ``tenant`` the current tenant of this context from now on (checked like
        ``open``); None goes back to the unscoped view. For ``%reactive tenant``."""
        if tenant is None or tenant == DEFAULT_TENANT:
            use_tenant(DEFAULT_TENANT)
            return None
        handle = self.open(tenant)
        use_tenant(tenant)
        return handle

    def list(self) -> pd.DataFrame:
        """The tenants this user may open: the ``list=`` query's rows (first column: the
        tenant) whose access check passes. Cached; refreshed when its tables change."""
        self._check_open()
        if self._list_fn is None:  # nothing lists the tenants: the resolver's empty frame
            return self.resolver.frame()
        with as_tenant(DEFAULT_TENANT):  # the directory is not any tenant's data
            frame: pd.DataFrame = self._list_fn(user=self.user)
        return frame

    def live(self) -> LiveQuery:
        """``list()`` as a live query (it refreshes when a tenant or a membership changes)."""
        self._check_open()
        if self._list_fn is None:
            raise ConfigError("tenancy(): no list= query (nor database= to derive it from)")
        return self._list_fn.live(user=self.user, tenant=DEFAULT_TENANT)

    def names(self) -> Names:
        """The tenant ids of ``list()``."""
        frame = self.list()
        return [str(v) for v in frame.iloc[:, 0]] if len(frame.columns) else []

    def install_triggers(self, tables: Iterable[str] | None = None) -> dict[str, Names]:
        """Install change-capture triggers in every tenant database (``tables``, or the
        tables the reactive functions watch that the database has), and on the main
        database's directory tables (so a revoked membership is seen whoever writes it).
        Returns ``{database: tables}`` (``""``: the main database)."""
        from sqlalchemy import inspect

        from reactive_nb.capture.sources import install_triggers

        self._check_open()
        owner = self._owner
        done: dict[str, Names] = {}
        directory = sorted(self._directory_tables | self._access_tables)
        if directory:
            done[""] = owner.install_triggers(directory)
        wanted = (owner.resolve_tables(tables, "install_triggers") if tables is not None
                  else None)
        watched = set().union(*(fn.watched for fn in owner.functions.values())) - {ALL_TABLES}
        for tenant in self.resolver.names():
            database = self.resolver.lookup(tenant)
            if database is None or database in done:
                continue
            engine = self.engines.connect_new(tenant, database)
            try:
                present = set(inspect(engine).get_table_names())
                names = sorted(wanted if wanted is not None else (watched & present or present))
                done[database] = install_triggers(engine, names)
            finally:
                engine.dispose()
        self.captures.forget()  # tenants decided "no triggers" may have them now
        for tenant in self._owner.scheduler.tenants():
            self._follow(tenant)
        return done

    def stats(self) -> dict[str, Any]:
        """Engines opened so far, open now and idle, listeners, access queries run."""
        return {"engines_opened": self.engines.opened, "engines": len(self.engines.tenants()),
                "idle": len(self.engines.idle()), "listening": self.captures.listening(),
                "access_queries": self.access.queries if self.access is not None else 0}

    # -- the TenantDirectory the registry asks ---------------------------------------------

    def check(self, tenant: str) -> None:
        self.engine(tenant)

    def engine(self, tenant: str) -> Engine | None:
        """The tenant's own engine (created on first use), None on the shared database;
        TenantNotFound / TenantDatabaseMissing / TenantAccessDenied otherwise. A refusal
        found here (a decision expired, nobody announced the change) stops the tenant's
        live queries as a re-check would: a refresh refused later must not leave the
        last frame on screen."""
        try:
            database = self.database(tenant)
            return None if database is None else self.engines.get(tenant, database)
        except (TenantNotFound, TenantAccessDenied) as exc:
            self._owner.scheduler.revoke(tenant, one_line(exc, typed=True))
            raise

    def database(self, tenant: str) -> str | None:
        """The tenant's database name (None: shared), after the existence and access checks."""
        try:
            database = self.resolver.lookup(tenant)
        except TenantNotFound:
            if self.access is None:
                raise
            # Suggest only tenants this user may open.
            raise TenantNotFound(tenant, self.names()) from None
        if self.access is not None:
            self.access.check(tenant)
        return database

    # -- what a handle needs ---------------------------------------------------------------

    def scope(self, tenant: str) -> AbstractContextManager[str]:
        self._check_open()
        return self._owner.tenant(tenant)

    def engine_for(self, tenant: str) -> Engine:
        return self._owner.tenants.engine(tenant) or self._owner.engine

    def session_for(self, tenant: str, **kwargs: Any) -> Session:
        from sqlalchemy.orm import Session

        engine = self.engine_for(tenant)
        session = Session(engine, **kwargs)
        if self._rls is not None and engine is self._owner.engine:
            self._rls.bind_session(session, tenant)
        return session

    def read_sql(self, sql: Any, params: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> pd.DataFrame:
        return self._owner.read_sql(sql, params, **kwargs)

    def execute(self, sql: Any,
                params: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
                **kwargs: Any) -> int:
        return self._owner.execute(sql, params, **kwargs)

    # -- keeping it current ----------------------------------------------------------------

    def recheck(self, *, everything: bool = False) -> dict[str, str]:
        """Re-check the tenants in use now, without waiting for the thread: a tenant whose
        row is gone, or that this user may no longer open, has its live queries stopped and
        cleared. Returns ``{tenant: error}`` of the stopped ones (``Rechecker.recheck``)."""
        return self._rechecker.recheck(everything=everything)

    def sweep(self) -> float:
        """Release the connections of idle tenant engines; seconds until the next is due."""
        return self._rechecker.sweep()

    # -- listeners of tenant databases (scheduler hooks) -----------------------------------

    def _follow(self, tenant: str) -> None:
        """A live query of ``tenant`` attached: listen to its database if it has triggers."""
        if (tenant == DEFAULT_TENANT or self.closed or self.captures.mode != "auto"
                or self.captures.decided(tenant)):
            return
        try:
            database = self.resolver.lookup(tenant)
            engine = None if database is None else self.engines.get(tenant, database)
        except Exception as exc:  # its refresh will report the problem
            logger.debug("no listener for tenant %r: %s", tenant, one_line(exc))
            return
        self.captures.listen(tenant, engine)

    def _unfollow(self, tenant: str) -> None:
        """The last live query of ``tenant`` went: stop listening to its database."""
        if tenant != DEFAULT_TENANT:
            self.captures.unlisten(tenant)

    def _volatile(self) -> Any:
        from reactive_nb.capture.sqlalchemy import calls_pattern

        return calls_pattern(self._owner.catalog.facts.volatile_functions)

    # -- lifecycle -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise ClosedError("this tenancy is closed")

    def close(self) -> None:
        """Stop the thread and the listeners, unhook and dispose every tenant engine, and
        give the ReactiveDB back its plain tenant registry. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._owner.tenants.use(None)
        self._unsubscribe()
        self._unwatch()
        self._rechecker.stop()
        self.engines.close()
        self.captures.close()
        if self._rls is not None:
            self._rls.close()


__all__ = ["Owner", "Tenancy"]
