"""ReactiveDB: one database with its relation graph, cache, versions, bus, capture and
scheduler. ``connect()`` builds one with embedded defaults (in-memory cache, versions and
bus; capture of this process's writes); ``redis=`` switches the cache, versions and bus to
a Redis shared by every process.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, overload

from reactive_nb.errors import ClosedError, RelationError
from reactive_nb.events import ALL_TABLES, DEFAULT_TENANT, Change
from reactive_nb.live.functions import KeyFunction, Priority, ReactiveFunction
from reactive_nb.model.relations import Catalog, RelationGraph
from reactive_nb.model.tenants import TenantRegistry, as_tenant, current_tenant

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from reactive_nb.capture.sqlalchemy import LocalCapture
    from reactive_nb.live.query import LiveQuery
    from reactive_nb.live.scheduler import Scheduler
    from reactive_nb.stores.bus import Bus
    from reactive_nb.stores.cache import Cache
    from reactive_nb.stores.versions import Versions

logger = logging.getLogger(__name__)

Capture = Literal["auto", "local", "none"]
_open: weakref.WeakSet[ReactiveDB] = weakref.WeakSet()


def connect(
    url_or_engine: str | Engine,
    *,
    relations: Mapping[str, Iterable[str]] | None = None,
    redis: Any = None,
    capture: Capture = "auto",
    min_interval: float = 0.05,
    workers: int = 4,
    tenant_column: str | None = None,
    tenants: Iterable[str] = (),
    key_prefix: str = "rnb",
    cache_bytes: int = 512 * 2**20,
    install: bool = False,
) -> ReactiveDB:
    """Open a ReactiveDB over a database URL or an existing SQLAlchemy Engine."""
    return ReactiveDB(url_or_engine, relations=relations, redis=redis, capture=capture,
                      min_interval=min_interval, workers=workers, tenant_column=tenant_column,
                      tenants=tenants, key_prefix=key_prefix, cache_bytes=cache_bytes,
                      install=install)


class ReactiveDB:
    """A database whose query results stay current; see ``connect``."""

    def __init__(
        self,
        url_or_engine: str | Engine,
        *,
        relations: Mapping[str, Iterable[str]] | None = None,
        redis: Any = None,
        capture: Capture = "auto",
        min_interval: float = 0.05,
        workers: int = 4,
        tenant_column: str | None = None,
        tenants: Iterable[str] = (),
        key_prefix: str = "rnb",
        cache_bytes: int = 512 * 2**20,
        install: bool = False,
    ) -> None:
        from sqlalchemy import Engine, create_engine

        if capture not in ("auto", "local", "none"):
            raise ValueError(f"capture must be 'auto', 'local' or 'none', not {capture!r}")
        self._owns_engine = not isinstance(url_or_engine, Engine)
        self.engine: Engine = (url_or_engine if isinstance(url_or_engine, Engine)
                               else create_engine(url_or_engine))
        self.capture_mode: Capture = capture
        self.tenant_column = tenant_column
        self.key_prefix = key_prefix
        self.tenants = TenantRegistry(tenants)
        self.closed = False
        self._functions: dict[str, ReactiveFunction] = {}
        self._lock = threading.Lock()  # guards _functions and _catalog replacement
        # Redis outage bookkeeping, guarded by _lock: whether we warned, and the version
        # bumps that failed, applied before the store is trusted again (else a cached
        # entry from before the outage would look fresh after a write made during it).
        self._store_down = False
        self._pending_bumps: dict[str, set[str]] = {}
        self._catalog_stale = False  # set when a commit names a table the catalog lacks
        try:
            self._catalog = Catalog.inspect(self.engine)
            self.relations = RelationGraph.parse(relations, self._catalog)
        except BaseException:
            if self._owns_engine:
                self.engine.dispose()
            raise
        self._redis = _redis_client(redis)
        self._owns_redis = isinstance(redis, str)
        self.cache, self.versions, self.bus = self._stores(cache_bytes)
        self.store_errors = _store_errors() if self._redis is not None else ()

        from reactive_nb.live.scheduler import Scheduler

        self.scheduler: Scheduler = Scheduler(workers=workers, min_interval=min_interval,
                                              follow=self.bus.follow,
                                              unfollow=self.bus.unfollow)
        self._unsubscribe = self.bus.subscribe(self.scheduler.on_change)
        self._capture: LocalCapture | None = None
        if capture != "none":
            from reactive_nb.capture.sqlalchemy import LocalCapture

            self._capture = LocalCapture(self.engine, self._local_commit, self._catalog.canonical)
        self._external: Any = None
        if capture == "auto":
            self._start_external(install)
        _open.add(self)

    def _stores(self, cache_bytes: int) -> tuple[Cache, Versions, Bus]:
        if self._redis is None:
            from reactive_nb.stores.bus import MemoryBus
            from reactive_nb.stores.cache import MemoryCache
            from reactive_nb.stores.versions import MemoryVersions

            return MemoryCache(max_bytes=cache_bytes), MemoryVersions(), MemoryBus()
        from reactive_nb.stores.bus import RedisBus
        from reactive_nb.stores.cache import RedisCache
        from reactive_nb.stores.versions import RedisVersions

        prefix = self.key_prefix
        return (RedisCache(self._redis, prefix=prefix, max_bytes=cache_bytes),
                RedisVersions(self._redis, prefix=prefix),
                RedisBus(self._redis, prefix=prefix, on_gap=self._on_gap))

    def _start_external(self, install: bool) -> None:
        """Listen for writes made outside this process (triggers), where installed."""
        from reactive_nb.capture.sources import start_external

        self._external = start_external(self, install=install)

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

    # -- reading and writing ---------------------------------------------------------------

    def read_sql(self, sql: Any, params: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> pd.DataFrame:
        """Run a query with bound parameters (``:name``) and return a DataFrame."""
        from sqlalchemy import text

        from reactive_nb._frames import pandas

        pandas_module = pandas()
        statement = text(sql) if isinstance(sql, str) else sql
        with self._engine().connect() as conn:
            try:
                frame: pd.DataFrame = pandas_module.read_sql(
                    statement, conn, params={**(params or {}), **kwargs})
            except pandas_module.errors.DatabaseError as exc:
                # pandas wraps the driver's error in a message that repeats the whole SQL;
                # the database's own error says what is wrong.
                if exc.__cause__ is not None:
                    raise exc.__cause__ from None
                raise
        return frame

    def execute(self, sql: Any,
                params: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
                **kwargs: Any) -> int:
        """Run a write in its own transaction and commit it; returns the affected row count.

        ``params`` may be a list of dicts for an executemany.
        """
        from sqlalchemy import text

        statement = text(sql) if isinstance(sql, str) else sql
        bound: Any = params if params is not None and not isinstance(params, Mapping) else {
            **(params or {}), **kwargs}
        with self._engine().begin() as conn:
            return int(conn.execute(statement, list(bound) if isinstance(bound, list | tuple)
                                    else bound).rowcount)

    def session(self, **kwargs: Any) -> Session:
        """An ORM session on this database; its commits are captured like any other write."""
        from sqlalchemy.orm import Session

        return Session(self._engine(), **kwargs)

    def _engine(self) -> Engine:
        self._check_open()
        return self.tenants.engine(current_tenant()) or self.engine

    @contextlib.contextmanager
    def tenant(self, tenant: str) -> Iterator[str]:
        """Run the block as ``tenant``: its cache entries, versions and changes."""
        with as_tenant(self.tenants.check(tenant)):
            yield tenant

    # -- invalidation ----------------------------------------------------------------------

    def invalidate(self, *tables: str, tenant: str | None = None) -> None:
        """Declare tables changed by hand (no argument: every table)."""
        names = (frozenset(self.resolve_tables(tables, "invalidate")) if tables
                 else frozenset({ALL_TABLES}))
        self._changed(tenant or current_tenant(), names)

    def _local_commit(self, tenant: str, tables: frozenset[str]) -> None:
        known = self._catalog.tables
        if any(t not in known and t != ALL_TABLES for t in tables):
            self._catalog_stale = True  # DDL created a table: re-read the catalog on demand
        self._changed(tenant, tables)

    def affected_tenants(self, tenant: str) -> set[str]:
        """Whose results a write "as" ``tenant`` can change.

        A tenant's write reaches that tenant and the unscoped default view (which may read
        every tenant's rows). An unscoped write (default tenant) reaches every tenant this
        process knows: registered ones and those it has live queries for.
        """
        if tenant != DEFAULT_TENANT:
            return {tenant, DEFAULT_TENANT}
        return {DEFAULT_TENANT, *self.tenants.names(), *self.scheduler.tenants()}

    def _changed(self, tenant: str, tables: frozenset[str], once_id: str | None = None) -> None:
        """Record a committed change for every affected tenant: versions, then the bus."""
        for target in self.affected_tenants(tenant):
            self._changed_one(target, tables,
                              None if once_id is None else f"{once_id}:{target}")

    def _changed_one(self, tenant: str, tables: frozenset[str], once_id: str | None) -> None:
        """Bump versions first, then publish: a change is never seen before its versions.

        With ``once_id`` (a trigger notification every listening process receives) only the
        first process bumps and publishes to other processes; the others still refresh
        their own live queries at once.
        """
        try:
            bumped = self.versions.bump(tenant, tables, once_id=once_id)
        except self.store_errors as exc:
            with self._lock:
                self._pending_bumps.setdefault(tenant, set()).update(tables)
            self.store_failed(exc)
            bumped = {}
        change = Change(tenant, tables)
        if bumped is None:
            self.scheduler.on_change(change)
        else:
            self.bus.publish(change)

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback(change)`` for every committed change; returns an unsubscribe."""
        return self.bus.subscribe(callback)

    def _on_gap(self, tenant: str) -> None:
        self.scheduler.mark_tenant_stale(tenant)

    # -- external capture ------------------------------------------------------------------

    def install_triggers(self, tables: Iterable[str] | None = None) -> list[str]:
        """Install change-capture triggers (None: every table a reactive function watches).

        Idempotent; with ``capture="auto"`` the listener for external writes starts at once.
        """
        from reactive_nb.capture.sources import install_triggers, start_external

        self._check_open()
        installed = install_triggers(self, None if tables is None else list(tables))
        if self.capture_mode == "auto" and self._external is None:
            self._external = start_external(self)
        return installed

    def uninstall_triggers(self) -> None:
        """Remove every reactive_nb trigger, function and table from the database."""
        from reactive_nb.capture.sources import uninstall_triggers

        self._check_open()
        if self._external is not None:
            self._external.close()
            self._external = None
        uninstall_triggers(self)

    # -- live queries ----------------------------------------------------------------------

    def live_query(self, fn: ReactiveFunction, inputs: dict[str, Any], key: str, tenant: str,
                   priority: Priority) -> LiveQuery:
        from reactive_nb.live.query import LiveQuery

        self._check_open()
        live = LiveQuery(self.scheduler, fn, inputs, key, tenant, priority)
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
        resolved = set()
        for name in names:
            if name == ALL_TABLES:
                resolved.add(name)
                continue
            try:
                resolved.add(self._catalog.resolve(name, where))
            except RelationError:
                self.refresh_catalog()
                resolved.add(self._catalog.resolve(name, where))
        return frozenset(resolved)

    def refresh_catalog(self) -> None:
        """Re-read the database's tables (after DDL)."""
        catalog = Catalog.inspect(self.engine)
        with self._lock:
            self._catalog = catalog
            self._catalog_stale = False

    def columns(self, table: str) -> frozenset[str]:
        """Lower-cased column names of a (canonically named) table."""
        if self._catalog_stale:
            self.refresh_catalog()
        return self._catalog.tables.get(self._catalog.canonical(table), frozenset())

    @property
    def tables(self) -> list[str]:
        """The database's tables (and views), canonically named."""
        if self._catalog_stale:
            self.refresh_catalog()
        return sorted(self._catalog.tables)

    def check_tenant(self, tenant: str) -> str:
        return self.tenants.check(tenant)

    def store_failed(self, exc: BaseException) -> None:
        """Redis failed: warn once per outage; results are served uncached meanwhile."""
        with self._lock:
            first, self._store_down = not self._store_down, True
        if first:
            logger.warning("Redis is unreachable (%s): serving uncached results until it is "
                           "back", exc)

    def store_ready(self) -> bool:
        """May the cache and versions be used? Applies version bumps that failed during an
        outage first; False while Redis is still unreachable."""
        if not self._store_down:
            return True
        with self._lock:
            pending, self._pending_bumps = self._pending_bumps, {}
        try:
            for tenant, tables in pending.items():
                self.versions.bump(tenant, tables)
        except self.store_errors as exc:
            with self._lock:
                for tenant, tables in pending.items():
                    self._pending_bumps.setdefault(tenant, set()).update(tables)
            self.store_failed(exc)
            return False
        with self._lock:
            recovered, self._store_down = self._store_down, False
        if recovered:
            logger.info("Redis is reachable again: caching resumed")
        return True

    def stats(self) -> dict[str, Any]:
        """Cache hits, misses and hit rate, overall and per function."""
        per = {name: fn.stats.as_dict() for name, fn in self.functions.items()}
        hits = sum(s["hits"] for s in per.values())
        misses = sum(s["misses"] for s in per.values())
        looked = hits + misses
        return {"hits": hits, "misses": misses, "hit_rate": hits / looked if looked else 0.0,
                "functions": per}

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
        if self._external is not None:
            self._external.close()
        self.scheduler.close()
        self._unsubscribe()
        self.bus.close()
        if self._capture is not None:
            self._capture.remove()
        self.cache.close()
        self.versions.close()
        if self._redis is not None and self._owns_redis:
            self._redis.close()
        if self._owns_engine:
            self.engine.dispose()


def _redis_client(redis: Any) -> Any:
    if redis is None:
        return None
    if isinstance(redis, str):
        import redis as redis_py

        return redis_py.Redis.from_url(redis, socket_connect_timeout=2, socket_timeout=5,
                                       health_check_interval=30)
    return redis


def _store_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@atexit.register
def _close_all() -> None:
    for db in list(_open):
        with contextlib.suppress(Exception):
            db.close()
