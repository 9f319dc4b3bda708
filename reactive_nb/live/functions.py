"""ReactiveFunction: a handler with validated inputs, a canonical cache key and a cache policy.

Calling it returns a DataFrame: from the cache when the entry is fresh (not expired and
every watched table's version unchanged), else by running the handler. Versions are read
*before* the handler runs, so a write committed while it runs leaves the new entry stale:
correctness never depends on a change event arriving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol

from reactive_nb._frames import to_frame
from reactive_nb.events import ALL_TABLES
from reactive_nb.live.freshness import (
    DEFINITION,
    Snapshot,
    is_current,
    is_fresh,
    recorded,
    recorded_tables,
    snapshot,
)
from reactive_nb.live.results import Fetched, FunctionStats, Peeked
from reactive_nb.live.sharing import fetch_shared
from reactive_nb.live.signature import Inputs, KeyFunction
from reactive_nb.model.fingerprint import definition_fingerprint
from reactive_nb.model.tenants import as_tenant, current_tenant

if TYPE_CHECKING:
    import pandas as pd

    from reactive_nb.live.query import LiveQuery
    from reactive_nb.stores.cache import Cache
    from reactive_nb.stores.cache.base import CacheEntry
    from reactive_nb.stores.health import StoreHealth
    from reactive_nb.stores.lease import Announcement, RedisLeases
    from reactive_nb.stores.versions import Versions

logger = logging.getLogger(__name__)

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")


class Owner(Protocol):
    """What a function needs from its ReactiveDB (kept small so functions stay below db)."""

    cache: Cache
    versions: Versions
    health: StoreHealth
    #: Elects one runner per result across processes when the cache is shared (Redis);
    #: None: every process runs its own misses (``db.leases = None`` turns sharing off).
    leases: RedisLeases | None

    def recording(self) -> AbstractContextManager[set[str]]: ...
    def resolve_tables(self, names: Iterable[str], where: str) -> frozenset[str]: ...
    def watched(self, dependencies: frozenset[str]) -> frozenset[str]: ...
    def check_tenant(self, tenant: str) -> str: ...
    def dependencies_changed(self, fn: ReactiveFunction) -> None: ...
    def live_query(
        self, fn: ReactiveFunction, inputs: dict[str, Any], key: str, tenant: str,
        priority: Priority, primary_key: tuple[str, ...] | None,
    ) -> LiveQuery: ...


class ReactiveFunction:
    """A reactive function; create it with ``@db.reactive``."""

    def __init__(
        self,
        owner: Owner,
        handler: Callable[..., Any],
        *,
        name: str | None = None,
        dependencies: Iterable[str] | None = None,
        ttl: float | None = None,
        cache: bool = True,
        key: KeyFunction | None = None,
        priority: Priority = "normal",
    ) -> None:
        """Validate the options first: a bad one is one ConfigError line and nothing is
        defined. ``dependencies`` is a list of table names; one string is refused
        (``dependencies="agent"`` would read as the tables a, g, e...: write ``["agent"]``).
        ``name`` defaults to the handler's name; dots are fine, spaces are not. ``ttl`` is
        a positive number of seconds (``"5"`` is refused, not converted)."""
        from reactive_nb.errors import ConfigError
        from reactive_nb.settings import FunctionOptions

        if not callable(handler):  # @db.reactive("agents") meant name="agents"
            raise ConfigError(f"reactive(): expected a function to decorate, got "
                              f"{handler!r:.60} (give the name as name={handler!r:.60})")
        options = FunctionOptions.parse({
            "name": name if name is not None else getattr(handler, "__name__", None),
            "dependencies": dependencies, "ttl": ttl, "cache": cache, "key": key,
            "priority": priority})
        dependencies = options.dependencies
        self._owner = owner
        self.handler = handler
        self.name: str = options.name
        self.ttl = options.ttl
        self.cache_enabled = options.cache
        self.priority: Priority = options.priority
        self.inputs = Inputs(handler, self.name, key)
        self.signature = self.inputs.signature
        self.input_model = self.inputs.model
        self.declared: frozenset[str] | None = (
            None if dependencies is None
            else owner.resolve_tables(dependencies, f"dependencies of {self.name}")
        )
        self.fingerprint = definition_fingerprint(handler, {
            "dependencies": None if self.declared is None else sorted(self.declared),
            "ttl": self.ttl, "cache": self.cache_enabled})
        self._inferred: frozenset[str] = frozenset()
        self._warned_no_reads = False
        self.stats = FunctionStats()
        self.__doc__ = handler.__doc__
        self.__wrapped__ = handler

    def __repr__(self) -> str:
        return f"<ReactiveFunction {self.name} watching {sorted(self.watched - {ALL_TABLES})}>"

    # -- inputs and keys -------------------------------------------------------------------

    def validate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Bind and validate inputs; raise InputError listing every problem."""
        return self.inputs.validate(*args, **kwargs)

    def key_for(self, inputs: Mapping[str, Any]) -> str:
        """Cache key of validated inputs (see ``signature.Inputs.key_for``)."""
        return self.inputs.key_for(inputs)

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        """The cache key these inputs map to (validated first)."""
        return self.key_for(self.validate(*args, **kwargs))

    # -- dependencies ----------------------------------------------------------------------

    @property
    def dependencies(self) -> frozenset[str]:
        """Declared dependencies, or the union of tables read over every run so far."""
        return self.declared if self.declared is not None else self._inferred

    @property
    def watched(self) -> frozenset[str]:
        """Tables whose change makes a result stale: dependencies, views resolved to their
        base tables, widened by the relation graph (derived, never stored)."""
        return self._owner.watched(self.dependencies)

    # -- calling ---------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        inputs = self.validate(*args, **kwargs)
        tenant = self._owner.check_tenant(current_tenant())
        return self.fetch(tenant, inputs).df

    def execute(self, inputs: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Seed-style call with a dict of inputs."""
        return self(**dict(inputs or {}))

    def live(self, inputs: Mapping[str, Any] | None = None, /, *,
             priority: Priority | None = None, tenant: str | None = None,
             primary_key: Iterable[str] | None = None, **kwargs: Any) -> LiveQuery:
        """A LiveQuery bound to these inputs: it refreshes itself when a watched table changes.

        Inputs come as keywords, or as a mapping (for an input named like an option:
        ``fn.live({"priority": 3}, priority="high")``). ``tenant`` defaults to the current
        one; ``primary_key`` names the columns that identify a row (for change highlights).
        """
        values = self.validate(**{**(inputs or {}), **kwargs})
        chosen = priority or self.priority
        if chosen not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}, not {chosen!r}")
        who = self._owner.check_tenant(current_tenant() if tenant is None else tenant)
        columns = tuple(primary_key) if primary_key is not None else None
        return self._owner.live_query(self, values, self.key_for(values), who, chosen, columns)

    def fetch(self, tenant: str, inputs: Mapping[str, Any], *, key: str | None = None,
              force: bool = False) -> Fetched:
        """Serve from the cache when fresh, else run the handler and cache its result.

        The tenant is checked first, also on the workers (a cache hit is data too): a
        tenant whose access was revoked, or whose row is gone, gets no frame. With a shared
        cache a miss is run by one process only; the others wait for its entry (see
        ``live.sharing``). ``force`` runs at once, without waiting for anyone."""
        key = key or self.key_for(inputs)
        owner = self._owner
        owner.check_tenant(tenant)
        usable = owner.health.ready()
        if usable and self.cache_enabled and not force:
            # One read of the counters serves the hit check and, on a miss, the run (or
            # the claim of it, with a shared cache).
            before = self.read_versions(tenant)
            if before is not None:
                hit = self._cached(tenant, key, before)
                if hit is not None:
                    return hit
                leases = owner.leases
                if leases is None or leases.closed:
                    return self.run_and_store(tenant, inputs, key, before)
                shared = fetch_shared(self, leases, owner.health, tenant, inputs, key, before)
                if shared is not None:
                    return shared
        return self.run_and_store(tenant, inputs, key,
                                   self.read_versions(tenant) if usable else None)

    def lookup(self, tenant: str, key: str, before: Snapshot | None = None) -> Fetched | None:
        """The fresh entry, without counting a hit or a miss (the miss was counted).
        ``before``: every counter of the tenant's scopes, read just before (then the entry
        is checked against those, with no further read)."""
        owner = self._owner
        try:
            entry = owner.cache.get(tenant, key, lambda v: self._fresh(tenant, v, before))
        except owner.health.errors as exc:
            owner.health.failed(exc)
            return None
        return self._served(entry)

    def accept(self, tenant: str, announced: Announcement) -> Fetched | None:
        """The copy of the entry another process's run announced, if fresh by the counters
        read with it (no round trip for those; scopes it lacks are read); None: no usable
        copy, read the cache instead."""
        owner = self._owner
        try:
            entry = announced.cached(owner.cache.clock(), lambda v: self._fresh(
                tenant, v, announced.counters))
        except owner.health.errors as exc:
            owner.health.failed(exc)
            return None
        return self._served(entry)

    def _served(self, entry: CacheEntry | None) -> Fetched | None:
        if entry is None:
            return None
        self._learn_recorded(entry.versions)
        return Fetched(entry.df, True, entry.versions,
                       max(self._owner.cache.clock() - entry.created_at, 0.0))

    def read_versions(self, tenant: str) -> Snapshot | None:
        """The counters a result of ``tenant`` records, read BEFORE its handler runs; None
        when the store failed (the result is then not cached)."""
        owner = self._owner
        try:
            return snapshot(owner.versions, tenant)
        except owner.health.errors as exc:
            owner.health.failed(exc)
            return None

    def run_and_store(self, tenant: str, inputs: Mapping[str, Any], key: str,
                       before: Snapshot | None) -> Fetched:
        """Run the handler and cache its frame under ``before`` (not cached when None).

        The entry records the tables watched *after* the run: a first run of an inferred
        function learns what it read only by running, and those tables' counters come
        from ``before`` too, so a write during the run still leaves the entry stale."""
        owner = self._owner
        with as_tenant(tenant):  # a worker thread runs it as the live query's tenant
            df = self.run(inputs)
        versions = recorded(before, tenant, self.watched) if before is not None else {}
        versions[DEFINITION] = self.fingerprint
        if self.cache_enabled and before is not None:
            try:
                owner.cache.set(tenant, key, df, versions, self.ttl)  # stores its own copy
            except owner.health.errors as exc:
                owner.health.failed(exc)
        return Fetched(df, False, versions)

    def peek(self, tenant: str, key: str) -> Peeked | None:
        """The cached frame, fresh or not; None when not cached."""
        owner = self._owner
        if not self.cache_enabled or not owner.health.ready():
            return None
        try:
            entry = owner.cache.get(tenant, key,
                                    lambda v: v.get(DEFINITION) == self.fingerprint)
            if entry is None:
                return None
            self._learn_recorded(entry.versions)
            return Peeked(entry.df, self._current(tenant, entry.versions), entry.created_at,
                          max(owner.cache.clock() - entry.created_at, 0.0))
        except owner.health.errors as exc:
            owner.health.failed(exc)
            return None

    def _fresh(self, tenant: str, versions: Mapping[str, int],
               known: Mapping[str, Mapping[str, int]] | None = None) -> bool:
        return is_fresh(self._owner.versions, tenant, self.watched, self.fingerprint, versions,
                        known)

    def _current(self, tenant: str, versions: Mapping[str, int]) -> bool:
        return is_current(self._owner.versions, tenant, self.watched, versions)

    def _cached(self, tenant: str, key: str,
                before: Snapshot | None = None) -> Fetched | None:
        """The fresh entry, counted as a hit or a miss."""
        found = self.lookup(tenant, key, before)
        with self.stats.lock:
            if found is not None:
                self.stats.hits += 1
            else:
                self.stats.misses += 1
        return found

    def run(self, inputs: Mapping[str, Any]) -> pd.DataFrame:
        """Run the handler (no cache), recording the tables it reads when inferring."""
        start = time.perf_counter()
        reads: set[str] = set()
        try:
            if self.declared is None:
                with self._owner.recording() as reads:
                    result = self.handler(**inputs)
            else:  # declared dependencies: the statements' reads are not needed
                result = self.handler(**inputs)
            df = to_frame(result, self.name)
        except BaseException:
            with self.stats.lock:
                self.stats.errors += 1
            raise
        elapsed = (time.perf_counter() - start) * 1000
        with self.stats.lock:
            self.stats.runs += 1
            self.stats.last_ms = elapsed
            self.stats.total_ms += elapsed
        if self.declared is None:
            self._learn(reads)
        return df

    def _learn_recorded(self, versions: Mapping[str, int]) -> None:
        """Inferred dependencies from an entry of this definition that another process
        computed: this process may never have run the handler (its first answer was a
        shared hit), and its live queries must still hear writes to those tables."""
        if self.declared is None and not (tables := recorded_tables(versions)) <= self._inferred:
            self._inferred = self._inferred | tables
            self._owner.dependencies_changed(self)

    def _learn(self, reads: set[str]) -> None:
        if not reads and not self._inferred and not self._warned_no_reads:
            self._warned_no_reads = True
            logger.warning(
                "%s read no table through this ReactiveDB, so its dependencies cannot be "
                "inferred: pass dependencies=[...] to @db.reactive", self.name)
        if not reads <= self._inferred:
            self._inferred = self._inferred | frozenset(reads)
            self._owner.dependencies_changed(self)

    # -- dashboards (issue 13) ---------------------------------------------------------------

    def controls(self, live: LiveQuery | None = None, /, *, debounce: float = 0.3,
                 tenant: str | None = None, **choices: Any) -> Any:
        """ipywidgets built from this function's signature, bound to one live query whose
        inputs follow them (``debounce`` seconds after the last change). ``choices`` gives
        an input a list of options (a Dropdown), a ``(min, max)`` range (a slider) or a
        fixed value; the result has ``.live`` and displays as the controls."""
        import importlib

        if controls_factory is None:
            importlib.import_module(WIDGET_MODULE)  # registers controls_factory
        assert controls_factory is not None, f"{WIDGET_MODULE} registers no controls"
        return controls_factory(self, live, debounce=debounce, tenant=tenant, choices=choices)



#: Builds ``fn.controls(...)``; the widget layer registers it (nothing here imports ui).
WIDGET_MODULE = "reactive_nb.ui.widgets"
controls_factory: Callable[..., Any] | None = None
