"""ReactiveDB: the composition root. It builds one database's stages and wires them:

capture (this process's writes, triggers) -> ChangeRecorder (versions, then bus) ->
scheduler (index, queue) -> workers -> live queries. Policies live in their stage; this
module only connects them and offers the user's entry points.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import weakref
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, overload

from reactive_nb.access import SqlAccess, open_engine
from reactive_nb.capture.sources import Capture, tell_local_only
from reactive_nb.changes import ChangeRecorder
from reactive_nb.errors import ClosedError
from reactive_nb.events import ALL_TABLES, Change
from reactive_nb.live.functions import Priority, ReactiveFunction
from reactive_nb.live.query import LiveQuery
from reactive_nb.live.results import summary
from reactive_nb.live.scheduler import Scheduler
from reactive_nb.live.signature import KeyFunction
from reactive_nb.live.workers import WorkerPool
from reactive_nb.model.relations import LiveCatalog, RelationGraph
from reactive_nb.model.tenants import TenantRegistry, current_tenant
from reactive_nb.settings import Settings
from reactive_nb.stores.factory import open_stores

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from reactive_nb.tenancy import Tenancy

_open: weakref.WeakSet[ReactiveDB] = weakref.WeakSet()


def connect(url_or_engine: str | Engine, /, **options: Any) -> ReactiveDB:
    """Open a ReactiveDB over a database URL or an existing SQLAlchemy Engine.

    Options (see ``reactive_nb.settings.Settings``): ``relations``, ``redis``, ``capture``,
    ``min_interval``, ``workers``, ``tenant_column``, ``tenants``, ``key_prefix``,
    ``cache_bytes``, ``install``. A bad one raises ConfigError before anything connects.
    """
    return ReactiveDB(url_or_engine, **options)


class ReactiveDB(SqlAccess):
    """A database whose query results stay current; see ``connect``."""

    def __init__(self, url_or_engine: str | Engine, /, **options: Any) -> None:
        self.settings = settings = Settings.parse(options)
        self.engine, self._owns_engine = open_engine(url_or_engine)
        self.tenants = TenantRegistry(settings.tenants)
        self.closed = False
        self._functions: dict[str, ReactiveFunction] = {}
        self._lock = threading.Lock()  # guards _functions
        try:
            self.catalog = LiveCatalog(self.engine)
            self.relations = RelationGraph.parse(settings.relations, self.catalog.current)
            self.stores = open_stores(settings.redis, self.engine,
                                      key_prefix=settings.key_prefix,
                                      cache_bytes=settings.cache_bytes,
                                      on_gap=lambda tenant: self.recorder.gap(tenant))
        except BaseException:
            if self._owns_engine:
                self.engine.dispose()
            raise
        self.cache, self.versions, self.bus = (self.stores.cache, self.stores.versions,
                                               self.stores.bus)
        self.leases, self.health = self.stores.leases, self.stores.health
        self.scheduler = Scheduler(min_interval=settings.min_interval,
                                   follow=self.bus.follow, unfollow=self.bus.unfollow)
        self._workers = WorkerPool(self.scheduler, settings.workers)
        if settings.workers:
            self.scheduler.on_attach = self._workers.start
        self.recorder = ChangeRecorder(self.versions, self.bus, self.health,
                                       widen=self.catalog.widen_writes)
        self._unsubscribe = [self.bus.subscribe(self.scheduler.on_change),
                             self.bus.subscribe(lambda change: self.catalog.note(change.tables))]
        self.capture = Capture(self.engine, self.recorder, self.catalog.current.canonical,
                               self.catalog.facts.volatile_functions, settings.capture)
        self._tenancy: Tenancy | None = None
        if settings.install:
            self.install_triggers()
        elif settings.capture == "auto" and not self.capture.listen() and self.stores.redis \
                is None:
            tell_local_only(self.engine)
        _open.add(self)

    def __repr__(self) -> str:
        return f"<ReactiveDB {self.engine.url!r} functions={len(self._functions)}>"

    def __enter__(self) -> ReactiveDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reactive functions ----------------------------------------------------------------

    @overload
    def reactive(self, fn: Callable[..., Any], /) -> ReactiveFunction: ...
    @overload
    def reactive(
        self, fn: None = None, /, *, name: str | None = None,
        dependencies: Iterable[str] | None = None, ttl: float | None = None,
        cache: bool = True, key: KeyFunction | None = None, priority: Priority = "normal",
    ) -> Callable[[Callable[..., Any]], ReactiveFunction]: ...

    def reactive(
        self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
        dependencies: Iterable[str] | None = None, ttl: float | None = None,
        cache: bool = True, key: KeyFunction | None = None, priority: Priority = "normal",
    ) -> ReactiveFunction | Callable[[Callable[..., Any]], ReactiveFunction]:
        """Make a handler reactive; usable bare (``@db.reactive``) or with options."""

        def wrap(handler: Callable[..., Any]) -> ReactiveFunction:
            self._check_open()
            function = ReactiveFunction(self, handler, name=name, dependencies=dependencies,
                                        ttl=ttl, cache=cache, key=key, priority=priority)
            with self._lock:
                self._functions[function.name] = function
            return function

        return wrap(fn) if fn is not None else wrap

    @property
    def functions(self) -> dict[str, ReactiveFunction]:
        with self._lock:
            return dict(self._functions)

    # -- changes ---------------------------------------------------------------------------

    def invalidate(self, *tables: str, tenant: str | None = None) -> None:
        """Declare tables changed by hand (no argument: every table)."""
        names = (self.resolve_tables(tables, "invalidate") if tables
                 else frozenset({ALL_TABLES}))
        self.recorder.invalidate(tenant or current_tenant(), names)

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback(change)`` for every committed change; returns an unsubscribe."""
        return self.bus.subscribe(callback)

    def install_triggers(self, tables: Iterable[str] | None = None) -> list[str]:
        """Install change-capture triggers (None: every table a reactive function watches,
        or every table when there is none yet). Idempotent; with ``capture="auto"`` the
        listener for external writes starts at once."""
        self._check_open()
        if tables is None:
            watched = set().union(*(fn.watched for fn in self.functions.values()))
            tables = sorted(watched - {ALL_TABLES}) or self.tables
        return self.capture.install(sorted(self.resolve_tables(tables, "install_triggers")),
                                    self.settings.tenant_column, self.catalog.columns)

    def uninstall_triggers(self) -> None:
        """Remove every reactive_nb trigger, function and table from the database."""
        self._check_open()
        self.capture.uninstall()

    @property
    def listening(self) -> bool:
        """Whether writes by other clients are captured here (triggers + a listener)."""
        return self.capture.listening

    # -- live queries ----------------------------------------------------------------------

    def live_query(self, fn: ReactiveFunction, inputs: dict[str, Any], key: str, tenant: str,
                   priority: Priority, primary_key: tuple[str, ...] | None = None) -> LiveQuery:
        self._check_open()
        live = LiveQuery(self.scheduler, fn, inputs, key, tenant, priority, primary_key)
        self.scheduler.attach(live)
        return live

    def priorities(self, names: Iterable[str]) -> None:
        """Explicit refresh order by function name, first = most important."""
        self.scheduler.set_priorities(list(names))

    def dependencies_changed(self, fn: ReactiveFunction) -> None:
        self.scheduler.reindex(fn)

    # -- services for functions ------------------------------------------------------------

    def recording(self) -> AbstractContextManager[set[str]]:
        from reactive_nb.capture.sqlalchemy import recording

        return recording()

    def resolve_tables(self, names: Iterable[str], where: str) -> frozenset[str]:
        """Canonical table names; an unknown one raises RelationError with a suggestion."""
        return self.catalog.resolve(names, where)

    def watched(self, dependencies: frozenset[str]) -> frozenset[str]:
        """Tables whose writes make results over ``dependencies`` stale: views count as
        their base tables, then the relation graph widens the set."""
        return self.relations.watched(self.catalog.read_set(dependencies))

    @property
    def tables(self) -> list[str]:
        """The database's tables (and views), canonically named."""
        return sorted(self.catalog.current.tables)

    def check_tenant(self, tenant: str) -> str:
        return self.tenants.check(tenant)

    # -- tenants -----------------------------------------------------------------------------

    def tenancy(self, *, database: str | None = None, url: str | None = None,
                access: str | None = None, user: str | None = None, rls: bool = False,
                list: str | None = None, access_ttl: float = 10.0,
                idle_timeout: float = 300.0, pool_size: int = 2,
                max_overflow: int = 2) -> Tenancy:
        """Resolve tenants from this (main) database, and decide who may open them;
        replaces an earlier tenancy. Options: see ``reactive_nb.tenancy.Tenancy``."""
        from reactive_nb.tenancy import Tenancy

        self._check_open()
        self._close_tenancy()
        self._tenancy = Tenancy(self, database=database, url=url, access=access, user=user,
                                rls=rls, list_sql=list, access_ttl=access_ttl,
                                idle_timeout=idle_timeout, pool_size=pool_size,
                                max_overflow=max_overflow)
        return self._tenancy

    @property
    def tenant_directory(self) -> Tenancy | None:
        """The tenancy set up by ``tenancy(...)``, or None."""
        return self._tenancy

    def _close_tenancy(self) -> None:
        tenancy, self._tenancy = self._tenancy, None
        if tenancy is not None:
            tenancy.close()

    def stats(self) -> dict[str, Any]:
        """Cache hits, misses and hit rate, overall and per function."""
        return summary({name: fn.stats for name, fn in self.functions.items()})

    # -- lifecycle -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise ClosedError("this ReactiveDB is closed")

    def close(self) -> None:
        """Stop every thread, unhook the engine and release the stores; idempotent."""
        if self.closed:
            return
        self.closed = True
        _open.discard(self)
        self._close_tenancy()
        self.capture.stop_listening()
        for live in self.scheduler.members():  # their widgets (and the flush thread) too
            live.close()
        self.scheduler.close()
        if self.leases is not None:  # wakes followers waiting on another process's run
            self.leases.close()
        self._workers.close()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self.bus.close()
        self.capture.close()
        self.stores.close()
        if self._owns_engine:
            self.engine.dispose()


@atexit.register
def _close_all() -> None:
    for db in list(_open):
        with contextlib.suppress(Exception):
            db.close()
