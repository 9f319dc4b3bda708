"""Schema facts: what the database knows about a statement's tables that its SQL does not say.

A cached result must never be served stale, but a statement names only some of the tables
its result depends on, or that its write changes. The rest is in the schema:

* **Views.** A result read through a view is stale after a write to any base table the view
  reads, directly or through views of views, although the SQL names only the view. A write
  *into* an updatable view writes its base tables. A materialized view is different: its
  rows change only on ``REFRESH MATERIALIZED VIEW``, so readers watch the view itself, and a
  refresh writes nothing but the view.
* **Foreign-key actions.** ``ON DELETE CASCADE`` (and ``SET NULL`` / ``SET DEFAULT``, on
  delete or on update) makes a write to a parent table change child tables the SQL does not
  name, and their children in turn.
* **Partitions.** A row written to a partition is a row of its partitioned parent, and a
  write to the parent lands in one of its partitions.
* **Volatile functions.** A user function or procedure that is not ``IMMUTABLE`` or
  ``STABLE`` may write any table, so a statement calling one may write everything.

PostgreSQL facts come from its catalogs, read on one connection. SQLite has views (their SQL
parsed with sqlglot) and foreign-key actions (``PRAGMA foreign_key_list``), no partitions and
no functions. Other dialects (MySQL, MariaDB) get empty facts for now: their writes are not
widened through views or cascades.

Names are canonical, as in the rest of the package: lower-case, bare in the database's default
schema (PostgreSQL's ``current_schema()``, SQLite's ``main``), ``schema.table`` elsewhere.
reactive_nb's own ``_reactive_nb*`` tables and the system schemas are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

logger = logging.getLogger(__name__)

#: Schemas that never hold user tables (and every ``pg_*`` schema).
_SYSTEM_SCHEMAS = frozenset({"information_schema", "pg_catalog", "pg_toast", "reactive_nb"})
#: reactive_nb's own bookkeeping tables.
_INTERNAL_PREFIX = "_reactive_nb"
#: SQLite foreign-key actions that write the child table.
_SQLITE_WRITING_ACTIONS = frozenset({"CASCADE", "SET NULL", "SET DEFAULT"})

_EMPTY: frozenset[str] = frozenset()


def _canonical(schema: str | None, name: str, default_schema: str | None) -> str:
    """``name`` lower-cased, qualified by ``schema`` unless that is the default schema."""
    if not schema or (default_schema and schema.lower() == default_schema.lower()):
        return name.lower()
    return f"{schema.lower()}.{name.lower()}"


def _ignored(schema: str | None, name: str) -> bool:
    """System schemas and reactive_nb's own tables hold nothing a cached result reads."""
    lowered = (schema or "").lower()
    return (lowered in _SYSTEM_SCHEMAS or lowered.startswith("pg_")
            or name.lower().startswith(_INTERNAL_PREFIX))


def _quote(identifier: str) -> str:
    """A SQLite identifier in double quotes; identifiers cannot be bound parameters."""
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class SchemaFacts:
    """Read-only schema facts of one database, read once; all names canonical."""

    #: View or materialized view -> the base tables it reads, through views of views.
    views: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Which of ``views`` are materialized views (PostgreSQL).
    materialized: frozenset[str] = _EMPTY
    #: Parent table -> child tables its writes change through FK actions, transitively; the
    #: parent itself only when it references itself (directly or round a cycle).
    cascades: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Partition or sub-partition -> its top-level partitioned table (PostgreSQL).
    partitions: Mapping[str, str] = field(default_factory=dict)
    #: User functions and procedures that may write, as ``name`` and as ``schema.name``.
    volatile_functions: frozenset[str] = _EMPTY
    #: Partition -> its immediate parent: a sub-partition's write also changes the middle level.
    partition_parents: Mapping[str, str] = field(default_factory=dict)
    #: View -> materialized views it reads (through plain views): a refresh of one changes it,
    #: although no base table in ``views`` was written.
    materialized_reads: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, engine: Engine) -> SchemaFacts:
        """The facts of ``engine``'s database; empty for dialects other than PG and SQLite."""
        dialect = engine.dialect.name
        if dialect not in ("postgresql", "sqlite"):
            return cls()
        # An internal connection: write capture ignores its catalog queries.
        with engine.connect().execution_options(reactive_nb_internal=True) as conn:
            raw = _read_postgresql(conn) if dialect == "postgresql" else _read_sqlite(conn)
        return raw.facts()

    def base_tables(self, names: Iterable[str]) -> frozenset[str]:
        """The tables whose writes change what ``names`` read: views become their base tables.

        A materialized view stays itself (only a refresh changes its rows), and a view over
        one also keeps that materialized view.
        """
        out: set[str] = set()
        for name in names:
            name = name.lower()
            if name in self.materialized or name not in self.views:
                out.add(name)
            else:
                out |= self.views[name]
                out |= self.materialized_reads.get(name, _EMPTY)
        return frozenset(out)

    def widen_writes(self, tables: Iterable[str]) -> frozenset[str]:
        """Every table a write to ``tables`` may change.

        Adds FK-action children, the base tables of a written updatable view, the partitions
        of a written partitioned table and the partitioned parents of every changed partition.
        A written materialized view (a refresh) adds nothing.
        """
        changed: set[str] = set()
        pending = [t.lower() for t in tables]
        while pending:
            table = pending.pop()
            if table in changed:
                continue
            changed.add(table)
            if table in self.materialized:
                continue
            pending.extend(self.views.get(table, _EMPTY))
            pending.extend(self._partitions_below.get(table, _EMPTY))
            for source in (table, *self._ancestors(table)):
                pending.extend(self.cascades.get(source, _EMPTY))
        # A changed partition is a changed parent, but a parent changed that way does not
        # change its other partitions: ancestors are added last, outside the closure.
        return frozenset(changed.union(*(self._ancestors(t) for t in changed)))

    def calls_volatile(self, function_names: Iterable[str]) -> bool:
        """Whether a statement calling these functions may write (so it writes anything)."""
        for name in function_names:
            parts = [part.strip().strip('"').lower() for part in name.split(".")]
            if ".".join(parts) in self.volatile_functions:
                return True
        return False

    def _ancestors(self, table: str) -> frozenset[str]:
        """The partitioned tables above ``table``, up to the top level."""
        out: set[str] = set()
        parent = self.partition_parents.get(table)
        while parent is not None and parent not in out:
            out.add(parent)
            parent = self.partition_parents.get(parent)
        top = self.partitions.get(table)
        if top is not None:
            out.add(top)
        return frozenset(out)

    @cached_property
    def _partitions_below(self) -> Mapping[str, frozenset[str]]:
        """Partitioned table -> every partition under it, at any depth."""
        below: dict[str, set[str]] = {}
        for partition in {*self.partitions, *self.partition_parents}:
            for ancestor in self._ancestors(partition):
                below.setdefault(ancestor, set()).add(partition)
        return {parent: frozenset(parts) for parent, parts in below.items()}


@dataclass
class _Raw:
    """Direct facts as read from one database, before closure."""

    view_refs: dict[str, set[str]] = field(default_factory=dict)  # view -> relations it names
    materialized: set[str] = field(default_factory=set)
    fk_children: dict[str, set[str]] = field(default_factory=dict)  # parent -> direct children
    partition_parents: dict[str, str] = field(default_factory=dict)
    functions: set[str] = field(default_factory=set)

    def facts(self) -> SchemaFacts:
        views, materialized_reads = _resolve_views(self.view_refs, self.materialized)
        return SchemaFacts(
            views=MappingProxyType(views),
            materialized=frozenset(self.materialized),
            cascades=MappingProxyType(_closure(self.fk_children)),
            partitions=MappingProxyType(_tops(self.partition_parents)),
            volatile_functions=frozenset(self.functions),
            partition_parents=MappingProxyType(dict(self.partition_parents)),
            materialized_reads=MappingProxyType(materialized_reads),
        )


def _resolve_views(refs: Mapping[str, set[str]], materialized: set[str]
                   ) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """Each view's base tables, and the materialized views it reads through plain views."""
    bases: dict[str, frozenset[str]] = {}
    stored: dict[str, frozenset[str]] = {}

    def visit(view: str, path: frozenset[str]) -> None:
        tables: set[str] = set()
        mats: set[str] = set()
        for ref in refs[view]:
            if ref not in refs:
                tables.add(ref)
                continue
            if ref in path:  # a cycle cannot be created, but never recurse forever
                continue
            if ref not in bases:
                visit(ref, path | {ref})
            tables |= bases[ref]
            mats |= {ref} if ref in materialized else stored[ref]
        bases[view] = frozenset(tables)
        stored[view] = frozenset(mats)

    for view in refs:
        if view not in bases:
            visit(view, frozenset({view}))
    return bases, {view: mats for view, mats in stored.items() if mats}


def _closure(edges: Mapping[str, set[str]]) -> dict[str, frozenset[str]]:
    """Every table reachable from each parent (itself only round a cycle)."""
    out: dict[str, frozenset[str]] = {}
    for parent, children in edges.items():
        seen: set[str] = set()
        stack = list(children)
        while stack:
            table = stack.pop()
            if table not in seen:
                seen.add(table)
                stack.extend(edges.get(table, ()))
        out[parent] = frozenset(seen)
    return out


def _tops(parents: Mapping[str, str]) -> dict[str, str]:
    """Each partition's top-level partitioned table."""
    tops: dict[str, str] = {}
    for partition, parent in parents.items():
        seen = {partition}
        while parent in parents and parent not in seen:
            seen.add(parent)
            parent = parents[parent]
        tops[partition] = parent
    return tops


# --- PostgreSQL -------------------------------------------------------------------------

# Constants only: nothing is ever formatted into these statements.
_PG_VIEWS = """
SELECT n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm')
"""
_PG_VIEW_DEPENDENCIES = """
SELECT DISTINCT vn.nspname, v.relname, rn.nspname, r.relname
FROM pg_rewrite w
JOIN pg_class v ON v.oid = w.ev_class
JOIN pg_namespace vn ON vn.oid = v.relnamespace
JOIN pg_depend d ON d.objid = w.oid
    AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
JOIN pg_class r ON r.oid = d.refobjid
JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE v.relkind IN ('v', 'm') AND r.relkind IN ('r', 'p', 'v', 'm', 'f') AND r.oid <> v.oid
"""
_PG_FK_ACTIONS = """
SELECT DISTINCT pn.nspname, p.relname, cn.nspname, c.relname
FROM pg_constraint k
JOIN pg_class p ON p.oid = k.confrelid
JOIN pg_namespace pn ON pn.oid = p.relnamespace
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace cn ON cn.oid = c.relnamespace
WHERE k.contype = 'f'
    AND (k.confdeltype IN ('c', 'n', 'd') OR k.confupdtype IN ('c', 'n', 'd'))
"""
# pg_inherits also links partitioned indexes; only tables count.
_PG_PARTITIONS = """
SELECT cn.nspname, c.relname, pn.nspname, p.relname
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE c.relispartition AND c.relkind IN ('r', 'p', 'f')
"""
# PostgreSQL gives every procedure provolatile 'v'; prokind 'p' keeps them listed regardless.
_PG_VOLATILE_FUNCTIONS = """
SELECT DISTINCT n.nspname, p.proname
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE (p.provolatile = 'v' OR p.prokind = 'p')
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
"""


def _rows(conn: Connection, sql: str) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    return [tuple(row) for row in conn.execute(text(sql))]


def _read_postgresql(conn: Connection) -> _Raw:
    from sqlalchemy import text

    default = conn.execute(text("SELECT current_schema()")).scalar() or "public"
    raw = _Raw()
    for schema, name, kind in _rows(conn, _PG_VIEWS):
        if not _ignored(schema, name):
            view = _canonical(schema, name, default)
            raw.view_refs[view] = set()
            if kind == "m":
                raw.materialized.add(view)
    for vschema, vname, rschema, rname in _rows(conn, _PG_VIEW_DEPENDENCIES):
        if not _ignored(vschema, vname) and not _ignored(rschema, rname):
            raw.view_refs[_canonical(vschema, vname, default)].add(
                _canonical(rschema, rname, default))
    for pschema, pname, cschema, cname in _rows(conn, _PG_FK_ACTIONS):
        if not _ignored(pschema, pname) and not _ignored(cschema, cname):
            raw.fk_children.setdefault(_canonical(pschema, pname, default), set()).add(
                _canonical(cschema, cname, default))
    for cschema, cname, pschema, pname in _rows(conn, _PG_PARTITIONS):
        if not _ignored(cschema, cname) and not _ignored(pschema, pname):
            raw.partition_parents[_canonical(cschema, cname, default)] = _canonical(
                pschema, pname, default)
    for schema, name in _rows(conn, _PG_VOLATILE_FUNCTIONS):
        if not _ignored(schema, ""):
            raw.functions |= {name.lower(), f"{schema.lower()}.{name.lower()}"}
    return raw


# --- SQLite -----------------------------------------------------------------------------

def _read_sqlite(conn: Connection) -> _Raw:
    default = "main"
    raw = _Raw()
    # Attached databases are schemas too; temp objects belong to one connection only.
    schemas = [row[1] for row in conn.exec_driver_sql("PRAGMA database_list") if row[1] != "temp"]
    for schema in schemas:
        tables: list[str] = []
        views: list[tuple[str, str]] = []
        master = (f"SELECT type, name, sql FROM {_quote(schema)}.sqlite_master"
                  " WHERE type IN ('table', 'view')")
        for kind, name, sql in conn.exec_driver_sql(master):
            if name.lower().startswith("sqlite_") or _ignored(None, name):
                continue
            if kind == "view":
                views.append((name, sql))
            else:
                tables.append(name)
        for table in tables:
            pragma = f"PRAGMA {_quote(schema)}.foreign_key_list({_quote(table)})"
            for row in conn.exec_driver_sql(pragma).mappings():
                actions = {str(row["on_delete"]).upper(), str(row["on_update"]).upper()}
                if actions & _SQLITE_WRITING_ACTIONS and not _ignored(None, row["table"]):
                    raw.fk_children.setdefault(
                        _canonical(schema, row["table"], default), set()).add(
                        _canonical(schema, table, default))
        for name, sql in views:
            refs = _sqlite_view_refs(sql)
            if refs is None:
                # Unparseable: the view may read any table of its schema.
                logger.warning("reactive_nb: cannot parse view %s.%s; assuming it reads "
                               "every table of %s", schema, name, schema)
                refs = {(None, table) for table in tables}
            raw.view_refs[_canonical(schema, name, default)] = {
                _canonical(ref_schema or schema, ref, default) for ref_schema, ref in refs
                if not ref.lower().startswith("sqlite_") and not _ignored(None, ref)}
    return raw


def _sqlite_view_refs(sql: str) -> set[tuple[str | None, str]] | None:
    """The (schema, name) of every table or view a view's SQL names; None if unparseable."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except SqlglotError:
        return None
    body = tree.expression if isinstance(tree, exp.Create) else tree
    if not isinstance(body, exp.Expression):
        return None
    ctes = {cte.alias_or_name.lower() for cte in body.find_all(exp.CTE)}
    refs: set[tuple[str | None, str]] = set()
    for table in body.find_all(exp.Table):
        # Table-valued functions (json_each(...)) have no name.
        if not table.name or (not table.db and table.name.lower() in ctes):
            continue
        refs.add((table.db or None, table.name))
    return refs


__all__ = ["SchemaFacts"]
