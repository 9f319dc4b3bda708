"""Which tables a SQL string reads and writes, with sqlglot.

Capture uses ``writes`` to know what a statement invalidated; dependency inference uses
``reads`` to know what a reactive function's SELECTs depend on. Both run on every
statement executed through the engine, so :func:`analyze` is cached and skips sqlglot
for transaction control.

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
from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.dialects import MySQL
from sqlglot.dialects.dialect import Dialect

from reactive_nb.model.sql.lexing import (
    RENAME_PAIR,
    RENAME_TABLE,
    TRANSACTION_ONLY,
    explained,
    first_word,
    scanner,
    skips_parsing,
    split_statements,
)

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
_TABLE_LIKE_KINDS = frozenset({"TABLE", "VIEW"})


@dataclass
class _Result:
    """Accumulates the analysis of the statements of one string."""

    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    ok: bool = True

    def freeze(self) -> SqlAnalysis:
        return SqlAnalysis(frozenset(self.reads), frozenset(self.writes), self.ok)


def _table_name(table: exp.Expr) -> str | None:
    """``schema.table`` (lower-cased) for a real table reference, None for a table
    function, a variable or anything else that is not a named table."""
    if isinstance(table, exp.Schema):
        table = table.this
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        return None
    name = table.name.lower()
    schema = table.text("db").lower()
    return f"{schema}.{name}" if schema else name


def _is_cte(table: exp.Table, name: str) -> bool:
    """Whether the unqualified reference ``table`` names a CTE visible where it stands.

    Walking up from the reference: the main query of a WITH sees all its CTEs; the body
    of a CTE sees the CTEs defined before it (all of them under RECURSIVE), so
    ``WITH agent AS (SELECT * FROM agent) ...`` reads the real table ``agent``.
    """
    node: exp.Expr = table
    while node.parent is not None:
        parent = node.parent
        if isinstance(node, exp.CTE) and isinstance(parent, exp.With):
            ctes = parent.expressions
            if not parent.args.get("recursive"):
                ctes = ctes[: next(i for i, c in enumerate(ctes) if c is node)]
            if any(c.alias_or_name.lower() == name for c in ctes):
                return True
            # Skip the query that owns this WITH: its CTEs were just considered.
            if parent.parent is None:
                return False
            node = parent.parent
            continue
        with_ = parent.args.get("with_") or parent.args.get("with")
        if (
            isinstance(with_, exp.With)
            and with_ is not node
            and any(c.alias_or_name.lower() == name for c in with_.expressions)
        ):
            return True
        node = parent
    return False


class _Statement:
    """Tables of one parsed statement: write targets first, then every other table."""

    def __init__(self, root: exp.Expr, mysql: bool) -> None:
        self.root = root
        self.mysql = mysql
        self.writes: set[str] = set()
        self.not_reads: set[int] = set()  # id() of Table nodes that are not reads
        self.ok = True

    def target(self, node: exp.Expr | None, *, also_read: bool = False) -> None:
        """Record ``node`` (a Table, or a Schema around one) as written; anything else
        as a target means the statement is not understood."""
        if isinstance(node, exp.Schema):
            node = node.this
        name = _table_name(node) if node is not None else None
        if node is None or name is None:
            self.ok = False
            return
        self.writes.add(name)
        if not also_read:
            self.not_reads.add(id(node))

    def run(self, result: _Result) -> None:
        root = self.root
        if isinstance(root, exp.Create):
            self._create(root)
        elif isinstance(root, exp.Drop):
            self._drop(root)
        elif isinstance(root, exp.Alter):
            self._alter(root)
        elif isinstance(root, exp.TruncateTable):
            if root.args.get("is_database") or str(root.args.get("option")).upper() == "CASCADE":
                self.ok = False
            for table in root.expressions:
                self.target(table)
        elif isinstance(root, exp.Copy) and root.args.get("kind"):  # COPY t FROM ...
            self.target(root.this)
        for node in root.find_all(exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Into):
            self._dml(node)
        for table in root.find_all(exp.Table):
            if id(table) in self.not_reads:
                continue
            name = _table_name(table)
            if name is None:
                continue  # a table function or a variable
            unqualified = not table.text("db")
            if unqualified and (_is_cte(table, name) or (self.mysql and name == "dual")):
                continue  # a CTE, or MySQL's dummy table
            result.reads.add(name)
        result.writes |= self.writes
        result.ok = result.ok and self.ok

    def _create(self, node: exp.Create) -> None:
        kind = str(node.args.get("kind") or "").upper()
        if kind in _TABLE_LIKE_KINDS:
            self.target(node.this)
        elif kind == "INDEX" and isinstance(node.this, exp.Index):
            self.target(node.this.args.get("table"))
        else:  # schema, function, trigger, sequence...: its name is not a table
            self.ok = False
            if node.this is not None:
                self.not_reads.update(id(t) for t in node.this.find_all(exp.Table))

    def _drop(self, node: exp.Drop) -> None:
        kind = str(node.args.get("kind") or "").upper()
        if node.args.get("cascade"):
            self.ok = False
        listed = node.args.get("tables") or []
        if kind in _TABLE_LIKE_KINDS:
            for table in listed:
                self.target(table)
        elif kind == "INDEX":
            # The listed names are indexes, not tables: never reads, never writes.
            self.not_reads.update(id(t) for t in listed)
            on = node.args.get("cluster")
            if isinstance(on, exp.OnProperty):
                self.target(on.this)
            else:
                self.ok = False
        else:
            self.ok = False

    def _alter(self, node: exp.Alter) -> None:
        kind = str(node.args.get("kind") or "").upper()
        if kind not in _TABLE_LIKE_KINDS:  # ALTER INDEX/SEQUENCE/...: names are not tables
            self.ok = False
            self.not_reads.update(id(t) for t in node.find_all(exp.Table))
            return
        old = node.this
        self.target(old)
        for action in node.args.get("actions") or []:
            if isinstance(action, exp.AlterRename):
                new = action.this
                if (
                    not self.mysql
                    and isinstance(new, exp.Table)
                    and isinstance(old, exp.Table)
                    and not new.text("db")
                    and old.text("db")
                ):
                    # PostgreSQL/SQLite: the renamed table stays in its schema.
                    new = new.copy()
                    new.set("db", old.args["db"].copy())
                    self.not_reads.add(id(action.this))
                self.target(new)

    def _dml(self, node: exp.Expr) -> None:
        if isinstance(node.parent, exp.When):
            return  # INSERT/UPDATE inside MERGE ... WHEN: the MERGE target covers it
        if isinstance(node, exp.Into):
            if isinstance(node.this, exp.Table) and not isinstance(node.this.this, exp.Identifier):
                self.not_reads.add(id(node.this))  # MySQL SELECT ... INTO @variable
            else:
                self.target(node.this)
        elif isinstance(node, exp.Insert | exp.Merge):
            self.target(node.this)
        elif isinstance(node, exp.Update):
            self.target(node.this)
            joins = node.this.args.get("joins") if node.this is not None else None
            for join in joins or []:
                self.target(join.this, also_read=True)
        elif isinstance(node, exp.Delete):
            self._delete(node)

    def _delete(self, node: exp.Delete) -> None:
        listed = node.args.get("tables")
        if not listed:
            self.target(node.this)
            return
        # MySQL multi-table DELETE t1, t2 FROM a AS t1 JOIN b AS t2: the list names
        # aliases of tables in FROM, which stays a read.
        aliases: dict[str, exp.Table] = {}
        for source in (node.this, *(node.args.get("using") or [])):
            if source is not None:
                for table in source.find_all(exp.Table):
                    if table.alias:
                        aliases[table.alias.lower()] = table
        for ref in listed:
            self.not_reads.add(id(ref))
            real = aliases.get(ref.name.lower()) if not ref.text("db") else None
            name = _table_name(real if real is not None else ref)
            if name is None:
                self.ok = False
            else:
                self.writes.add(name)


def _rename_table(statement: str, dialect: Dialect, result: _Result) -> None:
    """MySQL ``RENAME TABLE a TO b, c TO d``: writes every old and new name."""
    pos = RENAME_TABLE.match(statement)
    assert pos is not None
    offset = pos.end()
    while offset < len(statement):
        pair = RENAME_PAIR.match(statement, offset)
        if pair is None:
            result.ok = False
            return
        for part in ("old", "new"):
            name = _table_name(exp.to_table(pair.group(part), dialect=dialect))
            if name is None:
                result.ok = False
            else:
                result.writes.add(name)
        offset = pair.end()


def _statement(statement: str, dialect: Dialect, result: _Result) -> None:
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
        _rename_table(statement, dialect, result)
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
            _Statement(root, mysql).run(result)
        except Exception:  # a tree shape this module does not expect: a bug, not a crash
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
    result = _Result()
    with _quiet():
        for statement in split_statements(sql, lexer):
            _statement(statement, parser_dialect, result)
    if result.ok and not result.reads and not result.writes:
        return _NOTHING
    return result.freeze()
