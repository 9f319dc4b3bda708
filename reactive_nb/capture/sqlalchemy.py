"""Capture of this process's writes through a SQLAlchemy engine.

Every statement the engine executes is analysed (sqlglot, cached per statement text) and
the tables it writes are remembered on its DBAPI connection, in a stack that follows
savepoints. They are handed to ``on_commit`` only once the DBAPI ``commit()`` has returned
(we wrap the dialect's ``do_commit``: SQLAlchemy's ``commit`` event fires *before* the
commit, and bumping versions before the data is visible would let a refresh cache old data
under new versions). A rollback, or a rolled-back savepoint, drops what it covered. On an
AUTOCOMMIT connection every statement is its own commit.

The same hook records the tables a reactive function reads, for dependency inference.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from ..events import ALL_TABLES
from ..sqltables import analyze, sqlglot_dialect, written_tables
from ..tenants import current_tenant

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
#: Called with the DBAPI connection and the tables about to be committed, just before the
#: commit (an external source uses it to recognise its own notification of this commit);
#: it may return a callable to run once the commit succeeded.
BeforeCommit = Callable[[Any, frozenset[str]], "Callable[[], None] | None"]


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
        dialect: Any = engine.dialect
        self._orig_commit = dialect.do_commit
        self._orig_rollback = dialect.do_rollback
        dialect.do_commit = self._do_commit
        dialect.do_rollback = self._do_rollback
        event.listen(engine, "after_cursor_execute", self._after_execute)
        event.listen(engine, "savepoint", self._savepoint)
        event.listen(engine, "rollback_savepoint", self._rollback_savepoint)
        event.listen(engine, "release_savepoint", self._release_savepoint)

    def remove(self) -> None:
        """Unhook the engine (it keeps working, uncaptured)."""
        dialect: Any = self.engine.dialect
        for name in ("do_commit", "do_rollback"):
            dialect.__dict__.pop(name, None)
        event.remove(self.engine, "after_cursor_execute", self._after_execute)
        event.remove(self.engine, "savepoint", self._savepoint)
        event.remove(self.engine, "rollback_savepoint", self._rollback_savepoint)
        event.remove(self.engine, "release_savepoint", self._release_savepoint)

    # -- statements ------------------------------------------------------------------------

    def _after_execute(self, conn: Connection, cursor: Any, statement: str, parameters: Any,
                       context: Any, executemany: bool) -> None:
        if conn._execution_options.get(INTERNAL):
            return
        reads = _reads.get()
        if reads is None:  # not inside a reactive function: only writes matter
            writes, ok = written_tables(statement, self._dialect)
        else:
            result = analyze(statement, self._dialect)
            reads.update(self._canonical(t) for t in result.reads)
            writes, ok = result.writes, result.ok
        if ok:
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

    def _savepoint(self, conn: Connection, name: str) -> None:
        conn.info.setdefault(_PENDING, [{}]).append({})

    def _rollback_savepoint(self, conn: Connection, name: str, context: Any) -> None:
        stack = conn.info.get(_PENDING)
        if stack and len(stack) > 1:
            stack.pop()  # writes since the savepoint are undone, and the nested transaction ends

    def _release_savepoint(self, conn: Connection, name: str, context: Any) -> None:
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
                after = hook(dbapi_connection, frozenset().union(*merged.values()))
            except Exception:  # it only saves a duplicate refresh: never block a commit
                logger.debug("before-commit hook failed", exc_info=True)
        self._orig_commit(dbapi_connection)
        dbapi_connection.info.pop(_PENDING, None)
        if after is not None:
            after()
        for tenant, tables in merged.items():
            if tables:
                self._on_commit(tenant, frozenset(tables))

    def _do_rollback(self, dbapi_connection: Any) -> None:
        dbapi_connection.info.pop(_PENDING, None)
        self._orig_rollback(dbapi_connection)
