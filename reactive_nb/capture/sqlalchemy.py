"""Capture of this process's writes through a SQLAlchemy engine.

Every statement the engine executes is analysed (sqlglot, cached per statement text) and
the tables it writes are remembered on its DBAPI connection, in a stack that follows
savepoints. They are handed to ``on_commit`` only once the DBAPI ``commit()`` has returned.
A rollback, or a rolled-back savepoint, drops what it covered. On an AUTOCOMMIT connection
every statement is its own commit.

The hooks wrap the engine's dialect methods (``do_execute*``, ``do_commit``,
``do_rollback``, savepoints) rather than listening to engine events, for two reasons:
SQLAlchemy's ``commit`` event fires *before* the commit (bumping versions before the data
is visible would let a refresh cache old data under new versions), and any engine event
listener moves every execution onto a slower dispatch path (~25 µs a statement).

The same hook records the tables a reactive function reads, for dependency inference.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from reactive_nb.events import ALL_TABLES
from reactive_nb.model.sql import analyze, sqlglot_dialect, written_tables
from reactive_nb.model.tenants import current_tenant

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

logger = logging.getLogger(__name__)

#: Execution option marking reactive_nb's own statements (reflection), which capture skips.
INTERNAL = "reactive_nb_internal"
_PENDING = "reactive_nb.pending"  # key in the DBAPI connection's .info: list[dict[tenant, set]]

#: Tables read by the statements of the reactive function running in this context.
_reads: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "reactive_nb_reads", default=None)

OnCommit = Callable[[str, frozenset[str]], None]

#: Dialect methods replaced on the hooked engine's dialect instance.
_WRAPPED = ("do_execute", "do_executemany", "do_execute_no_params", "do_commit",
            "do_rollback", "do_savepoint", "do_rollback_to_savepoint",
            "do_release_savepoint")
#: Called with the DBAPI connection and the tables about to be committed per tenant, just
#: before the commit (an external source uses it to recognise its own notification of this
#: commit); it may return a callable to run once the commit succeeded.
BeforeCommit = Callable[[Any, Mapping[str, frozenset[str]]], "Callable[[], None] | None"]


@contextlib.contextmanager
def recording() -> Iterator[set[str]]:
    """Collect the tables read by statements executed in this block (this thread/task)."""
    reads: set[str] = set()
    token = _reads.set(reads)
    try:
        yield reads
    finally:
        _reads.reset(token)


class LocalCapture:
    """Hooks one engine; ``on_commit(tenant, tables)`` runs after each committed write."""

    def __init__(self, engine: Engine, on_commit: OnCommit,
                 canonical: Callable[[str], str]) -> None:
        self.engine = engine
        self._on_commit = on_commit
        self._canonical = canonical
        self._dialect = sqlglot_dialect(engine.dialect.name)
        self._warned: set[str] = set()
        self.before_commit: BeforeCommit | None = None
        #: Calls of the database's user-defined volatile functions (which may write any
        #: table): a statement matching it counts as writing every table. None: no such
        #: functions, or triggers report what they write.
        self.volatile: re.Pattern[str] | None = None
        dialect: Any = engine.dialect
        self._originals = {name: getattr(dialect, name) for name in _WRAPPED}
        dialect.do_execute = self._do_execute
        dialect.do_executemany = self._do_executemany
        dialect.do_execute_no_params = self._do_execute_no_params
        dialect.do_commit = self._do_commit
        dialect.do_rollback = self._do_rollback
        dialect.do_savepoint = self._do_savepoint
        dialect.do_rollback_to_savepoint = self._do_rollback_to_savepoint
        dialect.do_release_savepoint = self._do_release_savepoint

    def remove(self) -> None:
        """Unhook the engine (it keeps working, uncaptured). A capture hooked on the same
        engine after this one wraps ours: its methods are left in place."""
        dialect: Any = self.engine.dialect
        for name in _WRAPPED:
            if dialect.__dict__.get(name) == getattr(self, f"_{name}"):
                del dialect.__dict__[name]
                if self._originals[name] != getattr(dialect, name):
                    setattr(dialect, name, self._originals[name])  # an earlier wrapper

    # -- statements ------------------------------------------------------------------------

    def _do_execute(self, cursor: Any, statement: str, parameters: Any,
                    context: Any = None) -> None:
        self._originals["do_execute"](cursor, statement, parameters, context)
        self._executed(statement, context)

    def _do_executemany(self, cursor: Any, statement: str, parameters: Any,
                        context: Any = None) -> None:
        self._originals["do_executemany"](cursor, statement, parameters, context)
        self._executed(statement, context)

    def _do_execute_no_params(self, cursor: Any, statement: str, context: Any = None) -> None:
        self._originals["do_execute_no_params"](cursor, statement, context)
        self._executed(statement, context)

    def _executed(self, statement: str, context: Any) -> None:
        """A statement succeeded: remember what it wrote (and read, when recording)."""
        conn: Connection | None = getattr(context, "root_connection", None)
        if conn is None or context.execution_options.get(INTERNAL):
            return
        reads = _reads.get()
        if reads is None:  # not inside a reactive function: only writes matter
            writes, ok = written_tables(statement, self._dialect)
        else:
            result = analyze(statement, self._dialect)
            reads.update(self._canonical(t) for t in result.reads)
            writes, ok = result.writes, result.ok
        volatile = self.volatile
        if volatile is not None and volatile.search(statement):
            written = frozenset({ALL_TABLES})
        elif ok:
            if not writes:
                return
            written = frozenset(self._canonical(t) for t in writes)
        else:
            self._warn_unparsed(statement)
            written = frozenset({ALL_TABLES})
        tenant = current_tenant()
        if conn._is_autocommit_isolation():
            self._on_commit(tenant, written)
            return
        stack: list[dict[str, set[str]]] = conn.info.setdefault(_PENDING, [{}])
        stack[-1].setdefault(tenant, set()).update(written)

    def _warn_unparsed(self, statement: str) -> None:
        head = " ".join(statement.split())[:80]
        if head not in self._warned:
            self._warned.add(head)
            logger.warning("could not tell which tables this statement writes, so every "
                           "table counts as changed: %s", head)

    # -- transactions ----------------------------------------------------------------------

    def _do_savepoint(self, conn: Connection, name: str) -> None:
        self._originals["do_savepoint"](conn, name)
        conn.info.setdefault(_PENDING, [{}]).append({})

    def _do_rollback_to_savepoint(self, conn: Connection, name: str) -> None:
        self._originals["do_rollback_to_savepoint"](conn, name)
        stack = conn.info.get(_PENDING)
        if stack and len(stack) > 1:
            stack.pop()  # writes since the savepoint are undone, and the nested transaction ends

    def _do_release_savepoint(self, conn: Connection, name: str) -> None:
        self._originals["do_release_savepoint"](conn, name)
        stack = conn.info.get(_PENDING)
        if stack and len(stack) > 1:
            top = stack.pop()
            for tenant, tables in top.items():
                stack[-1].setdefault(tenant, set()).update(tables)

    def _do_commit(self, dbapi_connection: Any) -> None:
        stack = dbapi_connection.info.get(_PENDING)
        merged: dict[str, set[str]] = {}
        for level in stack or ():
            for tenant, tables in level.items():
                merged.setdefault(tenant, set()).update(tables)
        hook, after = self.before_commit, None
        if hook is not None and merged:
            try:
                after = hook(dbapi_connection,
                             {tenant: frozenset(tables) for tenant, tables in merged.items()})
            except Exception:  # it only saves a duplicate refresh: never block a commit
                logger.debug("before-commit hook failed", exc_info=True)
        self._originals["do_commit"](dbapi_connection)
        dbapi_connection.info.pop(_PENDING, None)
        if after is not None:
            after()
        for tenant, tables in merged.items():
            if tables:
                self._on_commit(tenant, frozenset(tables))

    def _do_rollback(self, dbapi_connection: Any) -> None:
        dbapi_connection.info.pop(_PENDING, None)
        self._originals["do_rollback"](dbapi_connection)


def calls_pattern(functions: Iterable[str]) -> re.Pattern[str] | None:
    """A pattern matching a call of any of ``functions`` (bare or schema-qualified)."""
    bare = sorted({name.rsplit(".", 1)[-1] for name in functions})
    if not bare:
        return None
    return re.compile(r"\b(?:" + "|".join(map(re.escape, bare)) + r")\s*\(", re.IGNORECASE)
