"""Tables of one SQL statement: write targets and reads, from its sqlglot tree.

:mod:`~reactive_nb.model.sql.statements` decides which statements are parsed and how;
this module applies the table rules listed there to each parsed statement (names,
CTE scoping, DDL targets, renames, multi-table UPDATE and DELETE) and to MySQL's
``RENAME TABLE``, which sqlglot does not parse. Results accumulate into one
:class:`Collected` per SQL string.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from reactive_nb.model.sql.lexing import RENAME_PAIR, RENAME_TABLE

__all__ = ["Collected", "StatementTables", "rename_table", "table_name"]

_TABLE_LIKE_KINDS = frozenset({"TABLE", "VIEW"})


@dataclass
class Collected:
    """Accumulates the analysis of the statements of one string (``ok`` false once any
    statement is not understood; the sets still hold what was)."""

    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    ok: bool = True


def table_name(table: exp.Expr) -> str | None:
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


class StatementTables:
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
        name = table_name(node) if node is not None else None
        if node is None or name is None:
            self.ok = False
            return
        self.writes.add(name)
        if not also_read:
            self.not_reads.add(id(node))

    def run(self, result: Collected) -> None:
        """Add the statement's writes and reads to ``result`` (``ok`` false if not understood)."""
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
            name = table_name(table)
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
            name = table_name(real if real is not None else ref)
            if name is None:
                self.ok = False
            else:
                self.writes.add(name)


def rename_table(statement: str, dialect: Dialect, result: Collected) -> None:
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
            name = table_name(exp.to_table(pair.group(part), dialect=dialect))
            if name is None:
                result.ok = False
            else:
                result.writes.add(name)
        offset = pair.end()
