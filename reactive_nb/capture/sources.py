"""Change capture of one database: this process's writes, and other clients' through
database triggers (install them, start the listener).

``Capture`` owns the capture mode. With ``capture="auto"`` a ReactiveDB listens for writes
made outside this process on a database that has reactive_nb triggers (installed by
``db.install_triggers()``, the ``reactive-nb install-triggers`` command, or
``connect(..., install=True)``). What a source sees goes to a ``ChangeSink``; this module
knows nothing above capture.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from reactive_nb.events import DEFAULT_TENANT

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from reactive_nb.capture.external import ExternalChange
    from reactive_nb.capture.sink import ChangeSink
    from reactive_nb.capture.sqlalchemy import LocalCapture

logger = logging.getLogger(__name__)


class Source(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...


class Capture:
    """What a ReactiveDB captures: its own writes (``LocalCapture``, unless the mode is
    ``"none"``) and, with ``"auto"``, other clients' writes once triggers are installed."""

    def __init__(self, engine: Engine, sink: ChangeSink, canonical: Callable[[str], str],
                 volatile_functions: frozenset[str], mode: str) -> None:
        self._engine = engine
        self._sink = sink
        self._mode = mode
        self.local: LocalCapture | None = None
        self.external: Source | None = None
        if mode != "none":
            from reactive_nb.capture.sqlalchemy import LocalCapture, calls_pattern

            self.local = LocalCapture(engine, sink.committed, canonical)
            # Without triggers, a statement calling a volatile function writes who knows
            # what: it counts as a write to every table.
            self.local.volatile = calls_pattern(volatile_functions)

    @property
    def listening(self) -> bool:
        """Whether writes by other clients are captured (triggers and a listener)."""
        return self.external is not None

    def listen(self) -> bool:
        """Start the listener where triggers are installed (mode ``"auto"``); whether one
        runs now."""
        if self._mode == "auto" and self.external is None:
            self.external = start_external(self._engine, self._sink, self.local)
        if self.external is not None and self.local is not None:
            self.local.volatile = None  # the triggers report what functions write
        return self.external is not None

    def install(self, tables: list[str], tenant_column: str | None,
                columns: Callable[[str], frozenset[str]]) -> list[str]:
        """Install triggers (see ``install_triggers``), then listen."""
        installed_tables = install_triggers(self._engine, tables, tenant_column, columns)
        self.listen()
        return installed_tables

    def uninstall(self) -> None:
        """Stop listening and remove every reactive_nb trigger, function and table."""
        self.stop_listening()
        uninstall_triggers(self._engine)

    def stop_listening(self) -> None:
        external, self.external = self.external, None
        if external is not None:
            external.close()

    def close(self) -> None:
        self.stop_listening()
        if self.local is not None:
            self.local.remove()


class OwnCommits:
    """Transactions this process committed and already published, by PostgreSQL txid.

    A trigger's notification of such a commit repeats what the local capture published,
    so it is dropped for the (table, tenant)s our publication covered; others still
    count: a write made as ``acme`` that changed ``globex`` rows (a ``tenant_column``
    trigger lists both) still reaches ``globex``. The txid is read on the committing
    connection just before COMMIT, so it is known before the notification can arrive.
    ``_lock`` guards the dict; it is bounded (oldest dropped).
    """

    LIMIT = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._published: OrderedDict[str, Mapping[str, frozenset[str]]] = OrderedDict()

    def before_commit(self, dbapi_connection: Any,
                      tables: Mapping[str, frozenset[str]]) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT txid_current_if_assigned()::text")
            row = cursor.fetchone()
        finally:
            cursor.close()
        if row and row[0]:
            with self._lock:
                self._published[str(row[0])] = dict(tables)
                while len(self._published) > self.LIMIT:
                    self._published.popitem(last=False)

    def remaining(self, change: ExternalChange) -> frozenset[str]:
        """The tables of ``change`` that our own publication did not cover (for every
        tenant the notification names). One transaction notifies once per table, so the
        record stays until it ages out."""
        with self._lock:
            published = self._published.get(change.txid)
        if published is None:
            return change.tables
        covered = set()
        for table in change.tables:
            tenants = {tenant for tenant, tables in published.items() if table in tables}
            # An unscoped write was published to every tenant already.
            if tenants and (DEFAULT_TENANT in tenants or change.tenants is None
                            or change.tenants <= tenants):
                covered.add(table)
        return change.tables - covered


def start_external(engine: Engine, sink: ChangeSink,
                   local: LocalCapture | None = None) -> Source | None:
    """Start the listener fitting the database, if it has triggers; None if it has none.

    ``local`` is this process's capture of the same engine: its own commits are then
    recognised in the notifications and not reported twice.
    """
    if engine.dialect.name not in ("postgresql", "sqlite") or not installed(engine):
        return None
    source = _make_source(engine, sink, local)
    source.start()
    return source


def _make_source(engine: Engine, sink: ChangeSink, local: LocalCapture | None) -> Source:
    own: OwnCommits | None = None
    if engine.dialect.name == "postgresql" and local is not None:
        own = OwnCommits()
        local.before_commit = own.before_commit

    def deliver(change: ExternalChange) -> None:
        if own is not None and not change.lost:
            tables = own.remaining(change)
            if not tables:
                return
            change = dataclasses.replace(change, tables=tables)
        sink.external(change)

    if engine.dialect.name == "postgresql":
        from reactive_nb.capture.postgres import PostgresListener, conninfo_from_url

        return PostgresListener(conninfo_from_url(engine.url), deliver)
    from reactive_nb.capture.sqlite import SqlitePoller

    path = engine.url.database
    if not path or path == ":memory:":
        raise ValueError("external capture needs a SQLite file, not an in-memory database")
    poller = SqlitePoller(path, deliver)
    if local is not None:
        local.before_commit = functools.partial(_sqlite_counters, poller)
    return poller


def _sqlite_counters(poller: Any, dbapi_connection: Any,
                     per_tenant: Mapping[str, frozenset[str]]) -> Callable[[], None] | None:
    """Read this transaction's trigger counters before COMMIT; announce them after it.

    SQLite has one writer at a time, so the counters read inside our write transaction are
    exactly those our commit publishes: the poller can skip them, since the local capture
    already published the change. Another writer's later commit moves them further.
    """
    from reactive_nb.capture.sqlite import CHANGES_TABLE

    cursor = dbapi_connection.cursor()
    try:
        rows = cursor.execute(f"SELECT tbl, version FROM {CHANGES_TABLE}").fetchall()
    except Exception:
        return None  # no triggers installed
    finally:
        cursor.close()
    tables = frozenset().union(*per_tenant.values())
    counters = {str(t): int(v) for t, v in rows if str(t) in tables}
    return functools.partial(poller.expect, counters) if counters else None


def _internal(engine: Engine) -> Any:
    """The engine for reactive_nb's own DDL, which local capture does not report."""
    return engine.execution_options(reactive_nb_internal=True)


def installed(engine: Engine) -> bool:
    return bool(_module(engine).installed_tables(_internal(engine)))


def install_triggers(engine: Engine, tables: list[str], tenant_column: str | None = None,
                     columns: Callable[[str], frozenset[str]] | None = None) -> list[str]:
    """Install triggers on ``tables`` (canonical names). On PostgreSQL, tables that have
    ``tenant_column`` (per ``columns(table)``) report the tenants of their changed rows;
    the others (lookup tables, say) report "every tenant"."""
    module = _module(engine)
    names = sorted(tables)
    if engine.dialect.name != "postgresql":
        return list(module.install_triggers(_internal(engine), names))
    column = tenant_column.lower() if tenant_column else None
    tagged = [n for n in names if column and columns is not None and column in columns(n)]
    untagged = [n for n in names if n not in tagged]
    result: list[str] = []
    if tagged:
        result += module.install_triggers(_internal(engine), tagged, tenant_column)
    if untagged:
        result += module.install_triggers(_internal(engine), untagged, None)
    return sorted(result)


def uninstall_triggers(engine: Engine) -> None:
    _module(engine).uninstall_triggers(_internal(engine))


def _module(engine: Engine) -> Any:
    name = engine.dialect.name
    if name == "postgresql":
        from reactive_nb.capture import postgres

        return postgres
    if name == "sqlite":
        from reactive_nb.capture import sqlite

        return sqlite
    raise ValueError(f"external change capture is not available for {name} databases")


#: Databases (URLs without password) already told that other processes are not heard.
_told_local_only: set[str] = set()


def tell_local_only(engine: Engine) -> None:
    """Say once per database and process (INFO on ``reactive_nb``, and a line in a
    notebook, where INFO logs are not shown) that writes by other processes will not be
    seen, and how to see them."""
    where = engine.url.render_as_string(hide_password=True)
    if where in _told_local_only:
        return
    _told_local_only.add(where)
    notice = (f"reactive_nb: writes to {where} made by other processes will not be seen "
              "(no triggers, no Redis); to see them run db.install_triggers() or connect "
              "with redis=URL")
    logging.getLogger("reactive_nb").info(notice)
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    if getattr(shell, "kernel", None) is not None:  # a notebook's kernel
        print(notice)
