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
- Statements are split on ``;`` here, outside strings, quoted identifiers, dollar
  quotes and comments; placeholders sqlglot rejects in some dialects (``%s``,
  ``%(name)s``, ``?1``, ``:1``, SQLAlchemy's ``__[POSTCOMPILE_x]``) are rewritten to
  ``:p`` first, and ``%%`` to ``%`` (not to ``?``: sqlglot rejects ``?::int`` but
  accepts ``:p::int``, and SQLAlchemy's PostgreSQL dialects emit ``%(name)s::VARCHAR``).
- With several statements, reads and writes are unions and ``ok`` is false if any
  statement is not understood (the sets then still hold what was understood).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.dialects import MySQL
from sqlglot.dialects.dialect import Dialect

__all__ = ["SqlAnalysis", "analyze", "sqlglot_dialect", "written_tables"]

logger = logging.getLogger(__name__)


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


# --- splitting and normalising -----------------------------------------------------

#: Whole strings that are only transaction control: answered without any parsing.
_TRANSACTION_ONLY = re.compile(
    r"\s*(?:BEGIN|COMMIT|END|ROLLBACK|ABORT|START\s+TRANSACTION|SAVEPOINT|RELEASE)\b"
    r"[^;'\"`$/#-]*;?\s*\Z",
    re.IGNORECASE,
)

_PLACEHOLDER_AND_SEMICOLON = r"""
  | (?P<param> %\(\w+\)s | %s(?!\w) | \?\d+ | (?<![\w\]:]):\d+ | __\[POSTCOMPILE_\w+\] )
  | (?P<percent> %% )
  | (?P<semi> ; )
"""

#: Standard SQL lexing (PostgreSQL, SQLite, generic): '' escapes only, E'' strings with
#: backslashes, dollar quoting.
_SCAN_STANDARD = re.compile(
    r"""
    (?P<skip>
        (?<!\w)[eE]'(?:[^'\\]|\\.|'')*'
      | '(?:[^']|'')*'
      | "(?:[^"]|"")*"
      | `(?:[^`]|``)*`
      | (?<![\w$])\$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$
    )
  | (?P<comment> --[^\n]* | /\*.*?\*/ )
    """
    + _PLACEHOLDER_AND_SEMICOLON,
    re.VERBOSE | re.DOTALL,
)

#: MySQL lexing: backslash escapes in both quote styles, # comments, no dollar quoting.
_SCAN_MYSQL = re.compile(
    r"""
    (?P<skip>
        '(?:[^'\\]|\\.|'')*'
      | "(?:[^"\\]|\\.|"")*"
      | `(?:[^`]|``)*`
    )
  | (?P<comment> --[^\n]* | \#[^\n]* | /\*.*?\*/ )
    """
    + _PLACEHOLDER_AND_SEMICOLON,
    re.VERBOSE | re.DOTALL,
)


def _statements(sql: str, scanner: re.Pattern[str]) -> list[str]:
    """Split on top-level ``;``, drop comments, normalise placeholders to ``:p``."""
    statements: list[str] = []
    parts: list[str] = []
    pos = 0
    for match in scanner.finditer(sql):
        parts.append(sql[pos : match.start()])
        pos = match.end()
        if match.group("skip") is not None:
            parts.append(match.group())
        elif match.group("comment") is not None:
            parts.append(" ")
        elif match.group("param") is not None:
            parts.append(":p")
        elif match.group("percent") is not None:
            parts.append("%")
        else:  # semicolon
            statements.append("".join(parts).strip())
            parts = []
    parts.append(sql[pos:])
    statements.append("".join(parts).strip())
    return [s for s in statements if s]


# --- per-statement classification --------------------------------------------------

_FIRST_WORD = re.compile(r"[A-Za-z_]+")

_TRANSACTION_WORDS = frozenset(
    {"BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE"}
)
_HARMLESS_WORDS = frozenset(
    {
        "SET",
        "SHOW",
        "PRAGMA",
        "LISTEN",
        "NOTIFY",
        "UNLISTEN",
        "VACUUM",
        "ANALYZE",
        "ANALYSE",
        "DISCARD",
        "RESET",
    }
)

_EXPLAIN_PREFIX = re.compile(
    r"""EXPLAIN\b
        (?:\s+QUERY\s+PLAN\b)?
        (?:\s*\((?:[^()]|\([^()]*\))*\))?
        (?:\s+(?:ANALY[SZ]E|VERBOSE|EXTENDED|PARTITIONS|FORMAT\s*=\s*\w+)\b)*
        \s*""",
    re.IGNORECASE | re.VERBOSE,
)

_IDENT = r"""(?:`(?:[^`]|``)*`|"(?:[^"]|"")*"|[\w$]+)"""
_NAME = rf"{_IDENT}(?:\s*\.\s*{_IDENT})*"
_RENAME_TABLE = re.compile(r"RENAME\s+TABLES?\s+", re.IGNORECASE)
_RENAME_PAIR = re.compile(rf"(?P<old>{_NAME})\s+TO\s+(?P<new>{_NAME})\s*(?:,\s*|\Z)", re.IGNORECASE)

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
    pos = _RENAME_TABLE.match(statement)
    assert pos is not None
    offset = pos.end()
    while offset < len(statement):
        pair = _RENAME_PAIR.match(statement, offset)
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
    word_match = _FIRST_WORD.match(statement)
    word = word_match.group().upper() if word_match else ""
    if word in _TRANSACTION_WORDS or word in _HARMLESS_WORDS:
        return
    if word == "START" and re.match(r"START\s+TRANSACTION\b", statement, re.IGNORECASE):
        return
    if word == "EXPLAIN":
        prefix = _EXPLAIN_PREFIX.match(statement)
        rest = statement[prefix.end() :] if prefix else ""
        if rest:
            _statement(rest, dialect, result)
        else:
            result.ok = False
        return
    if word == "RENAME" and _RENAME_TABLE.match(statement):
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
    if _TRANSACTION_ONLY.match(sql):
        return _NOTHING
    scanner = _SCAN_MYSQL if isinstance(parser_dialect, MySQL) else _SCAN_STANDARD
    result = _Result()
    with _quiet():
        for statement in _statements(sql, scanner):
            _statement(statement, parser_dialect, result)
    if result.ok and not result.reads and not result.writes:
        return _NOTHING
    return result.freeze()


# -- written tables only: a fast path for capture ------------------------------------------

_LEAD = r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*"
_SIMPLE_SELECT = re.compile(rf"\A{_LEAD}SELECT\b", re.IGNORECASE | re.DOTALL)
_INTO = re.compile(r"\bINTO\b", re.IGNORECASE)
_SIMPLE_WRITE = re.compile(
    rf"""\A{_LEAD}(?:
        (?:INSERT(?:\s+OR\s+\w+)?|REPLACE)\s+INTO\s+(?P<insert>{_NAME})\s*(?:\(|VALUES\b|SELECT\b|DEFAULT\b)
      | UPDATE(?:\s+ONLY)?\s+(?P<update>{_NAME})(?:\s+(?:AS\s+)?(?!SET\b)[\w$]+)?\s+SET\b
      | DELETE\s+FROM(?:\s+ONLY)?\s+(?P<delete>{_NAME})
        (?:\s+(?:AS\s+)?(?!WHERE\b|USING\b|RETURNING\b)[\w$]+)?
        (?:\s+(?:WHERE|USING|RETURNING)\b|\s*\Z)
    )""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
_PART = re.compile(r"""`((?:[^`]|``)*)`|"((?:[^"]|"")*)"|([\w$]+)""")


def _plain_name(name: str) -> str:
    """``"Sales"."Order"`` -> ``sales.order`` (schema kept, catalog dropped), as analyze."""
    parts = [(b or q or w).replace('""', '"').replace("``", "`").lower()
             for b, q, w in _PART.findall(name)]
    return ".".join(parts[-2:])


@functools.lru_cache(maxsize=4096)
def written_tables(sql: str, dialect: str | None = None) -> tuple[frozenset[str], bool]:
    """``(tables written, ok)`` of ``sql``: what capture needs, faster than ``analyze``.

    Statements with inlined literals are all distinct, so each would cost a sqlglot parse
    (milliseconds); a single ``SELECT`` without ``INTO`` writes nothing, and a single
    ``INSERT/UPDATE/DELETE`` of one named table writes just that table, which a regular
    expression tells. Anything else (several statements, CTEs, DDL, MySQL multi-table
    forms) goes to :func:`analyze`.
    """
    body = sql.rstrip().rstrip(";")
    if ";" not in body:
        if _SIMPLE_SELECT.match(body) and not _INTO.search(body):
            return frozenset(), True
        match = _SIMPLE_WRITE.match(body)
        if match is not None:
            name = match.group("insert") or match.group("update") or match.group("delete")
            return frozenset({_plain_name(name)}), True
    result = analyze(sql, dialect)
    return result.writes, result.ok
