"""Which tables a SQL string reads and writes, with sqlglot.

Capture uses ``writes`` to know what a statement invalidated; dependency inference uses
``reads`` to know what a reactive function's SELECTs depend on. Both run on every
statement executed through the engine, so :func:`analyze` is cached and skips sqlglot
for transaction control. This module classifies each statement (skipped, unwrapped,
parsed or not understood); :mod:`~reactive_nb.model.sql.tables` extracts the tables of
the parsed ones.

The analysis is conservative where it matters: anything it cannot classify is
``ok=False`` and the caller must assume every table was written. Rules and the places
where sqlglot's behaviour forced a choice:

- Names are lower-cased, quoted or not (``"Agent Table"`` -> ``agent table``), so a
  quoted ``"Order"`` and an unquoted ``order`` are the same name. Schema-qualified
  names stay qualified (``public.agent``); catalog/database prefixes beyond the schema
  are dropped. No default schema is applied: ``agent`` and ``public.agent`` are
  different strings and resolving them is the caller's job.
- ``reads`` holds every table referenced anywhere except write targets and references
  to a CTE. CTE names are resolved by scope, as PostgreSQL and MySQL do: in
  ``WITH agent AS (SELECT * FROM agent WHERE active) SELECT * FROM agent`` the body
  reads the real table ``agent``; only RECURSIVE lets a body see its own name. A write
  target also counts as read only when it is referenced again elsewhere:
  ``INSERT INTO a SELECT * FROM a`` reads ``a``, ``UPDATE a SET x = x + 1`` does not.
- MySQL multi-table ``UPDATE a JOIN b ... SET`` writes every joined table (which ones
  the SET touches is not resolved); the joined tables are also reads.
- ``CREATE TABLE``/``CREATE VIEW`` (incl. materialized) write the new name;
  ``CREATE INDEX ... ON t`` and ``DROP INDEX ... ON t`` write ``t``. An index statement
  whose table is not in the SQL (``DROP INDEX ix``, ``ALTER INDEX``) is ``ok=False``,
  as is any CREATE/DROP/ALTER of another kind (schema, function, trigger, sequence...).
  ``DROP ... CASCADE`` and ``TRUNCATE ... CASCADE`` are ``ok=False``: they reach tables
  the SQL does not name.
- Renames write the old and the new name; ``ALTER TABLE s.a RENAME TO b`` writes
  ``s.a`` and ``s.b`` (the new name stays in the old schema), except on MySQL where an
  unqualified new name is kept as written. MySQL ``RENAME TABLE a TO b, c TO d`` is a
  generic command in sqlglot and is recognised here with a regular expression.
- ``REPLACE INTO`` is a generic command in sqlglot; it is analysed as ``INSERT INTO``.
- ``EXPLAIN [options] stmt`` is analysed as ``stmt`` (sqlglot keeps it as an opaque
  command); its writes are reported even without ANALYZE, which errs on the safe side.
- sqlglot parses some harmless statements as a bare expression (``SAVEPOINT x``,
  ``LISTEN ch``, ``DISCARD ALL`` become column aliases) and cannot parse others
  (``RELEASE SAVEPOINT``, ``NOTIFY ch, 'x'``). So each statement's first keyword is
  classified before parsing: transaction control and the allow-list (SET, SHOW, PRAGMA,
  LISTEN, NOTIFY, UNLISTEN, VACUUM, ANALYZE, DISCARD, RESET) are ``ok`` with no tables,
  without being parsed. Any other statement must parse to a known statement node;
  a generic ``Command``, a bare expression or a parse error is ``ok=False``.
- Statements are split on ``;`` (in :mod:`~reactive_nb.model.sql.lexing`), outside
  strings, quoted identifiers, dollar quotes and comments; placeholders sqlglot rejects
  in some dialects (``%s``, ``%(name)s``, ``?1``, ``:1``, SQLAlchemy's
  ``__[POSTCOMPILE_x]``) are rewritten to ``:p`` first, and ``%%`` to ``%`` (not to
  ``?``: sqlglot rejects ``?::int`` but accepts ``:p::int``, and SQLAlchemy's
  PostgreSQL dialects emit ``%(name)s::VARCHAR``).
- With several statements, reads and writes are unions and ``ok`` is false if any
  statement is not understood (the sets then still hold what was understood).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.dialects import MySQL
from sqlglot.dialects.dialect import Dialect

from reactive_nb.model.sql.lexing import (
    RENAME_TABLE,
    TRANSACTION_ONLY,
    explained,
    first_word,
    scanner,
    skips_parsing,
    split_statements,
)
from reactive_nb.model.sql.tables import Collected, StatementTables, rename_table

__all__ = ["SqlAnalysis", "analyze", "sqlglot_dialect"]

# The package's logger, as before the package was split into modules.
logger = logging.getLogger("reactive_nb.model.sql")


@dataclass(frozen=True)
class SqlAnalysis:
    """Tables one SQL string reads and writes.

    ``ok=False`` means the SQL was not (fully) understood: the caller must assume that
    every table was written.
    """

    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    ok: bool = True


_NOTHING = SqlAnalysis()

_SQLALCHEMY_TO_SQLGLOT = {
    "postgresql": "postgres",
    "sqlite": "sqlite",
    "mysql": "mysql",
    "mariadb": "mysql",
}


def sqlglot_dialect(sqlalchemy_dialect_name: str) -> str | None:
    """The sqlglot dialect for a SQLAlchemy dialect name (``engine.dialect.name``), or
    None (sqlglot's generic dialect) for one we do not map."""
    return _SQLALCHEMY_TO_SQLGLOT.get(sqlalchemy_dialect_name.lower())


# --- silencing sqlglot -------------------------------------------------------------
# sqlglot logs a warning when it falls back to a generic Command. Bad SQL is an
# expected input here, so records emitted while *this module* parses are dropped;
# sqlglot used elsewhere in the process keeps its logging.

_analyzing = threading.local()


class _DropWhileAnalyzing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_analyzing, "active", False)


def _install_filter() -> None:
    sqlglot_logger = logging.getLogger("sqlglot")
    if not any(isinstance(f, _DropWhileAnalyzing) for f in sqlglot_logger.filters):
        sqlglot_logger.addFilter(_DropWhileAnalyzing())


_install_filter()


@contextmanager
def _quiet() -> Iterator[None]:
    previous = getattr(_analyzing, "active", False)
    _analyzing.active = True
    try:
        yield
    finally:
        _analyzing.active = previous


# --- per-statement classification --------------------------------------------------

#: Statement nodes that touch no table data.
_HARMLESS_NODES: tuple[type[exp.Expr], ...] = (
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Set,
    exp.Pragma,
    exp.Show,
    exp.Describe,
    exp.Use,
    exp.Analyze,
    exp.Grant,
    exp.Revoke,
    exp.Attach,
    exp.Detach,
)
#: Statement nodes whose tables we extract.
_DATA_NODES: tuple[type[exp.Expr], ...] = (
    exp.Query,
    exp.Values,
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.TruncateTable,
    exp.Copy,
)


def _statement(statement: str, dialect: Dialect, result: Collected) -> None:
    word = first_word(statement)
    if skips_parsing(word, statement):
        return
    if word == "EXPLAIN":
        rest = explained(statement)
        if rest:
            _statement(rest, dialect, result)
        else:
            result.ok = False
        return
    if word == "RENAME" and RENAME_TABLE.match(statement):
        rename_table(statement, dialect, result)
        return
    if word == "REPLACE":
        statement = "INSERT" + statement[len(word) :]
    try:
        roots = dialect.parse(statement)
    except Exception:  # ParseError, TokenError, or a sqlglot bug: all mean "unknown"
        result.ok = False
        return
    mysql = isinstance(dialect, MySQL)
    for root in roots:
        if root is None or isinstance(root, _HARMLESS_NODES):
            continue
        if not isinstance(root, _DATA_NODES):  # Command, bare expression, other kinds
            result.ok = False
            continue
        try:
            StatementTables(root, mysql).run(result)
        except Exception:  # a tree shape the table rules do not expect: a bug, not a crash
            logger.debug("could not analyse %r", statement, exc_info=True)
            result.ok = False


@functools.lru_cache(maxsize=4096)
def analyze(sql: str, dialect: str | None = None) -> SqlAnalysis:
    """The tables ``sql`` (one or several statements) reads and writes.

    ``dialect`` is a sqlglot dialect name (see :func:`sqlglot_dialect`), None for the
    generic one. Cached: it runs on every statement executed through the engine.
    Raises ValueError for an unknown dialect; never for bad SQL (that is ``ok=False``).
    """
    parser_dialect = Dialect.get_or_raise(dialect)  # a dictionary lookup
    if TRANSACTION_ONLY.match(sql):
        return _NOTHING
    lexer = scanner(isinstance(parser_dialect, MySQL))
    result = Collected()
    with _quiet():
        for statement in split_statements(sql, lexer):
            _statement(statement, parser_dialect, result)
    if result.ok and not result.reads and not result.writes:
        return _NOTHING
    return SqlAnalysis(frozenset(result.reads), frozenset(result.writes), result.ok)
