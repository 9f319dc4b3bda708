"""The relation graph: which tables make which results stale.

``{"agent": ["organization", "message.from_agent_id"]}`` means: when ``agent`` changes,
results that read ``organization`` or ``message`` are stale too. A function's *watched*
tables are its dependencies plus every table whose relation list names one of them; both
invalidation and cache freshness use that one set.

Table names are canonical: lower-case, bare for the database's default schema (``agent``),
``schema.table`` elsewhere (``analytics.events``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reactive_nb.errors import RelationError, closest
from reactive_nb.events import ALL_TABLES
from reactive_nb.model.schema import SchemaFacts

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

#: Schemas that never hold user tables.
SYSTEM_SCHEMAS = frozenset({"information_schema", "pg_catalog", "pg_toast", "reactive_nb"})


def canonical(name: str, default_schema: str | None) -> str:
    """Lower-case ``name`` and drop the default schema's prefix."""
    name = name.strip().strip('"').lower()
    if default_schema and name.startswith(default_schema.lower() + "."):
        return name[len(default_schema) + 1 :]
    return name


@dataclass(frozen=True)
class Catalog:
    """The tables (and views) of one database, with their columns, read once via the inspector."""

    tables: Mapping[str, frozenset[str]]  # canonical table name -> column names
    default_schema: str | None = None

    @classmethod
    def inspect(cls, engine: Engine) -> Catalog:
        # An internal connection: capture ignores its (reflection) statements.
        with engine.connect().execution_options(reactive_nb_internal=True) as conn:
            return cls._read(conn)

    @classmethod
    def _read(cls, conn: Connection) -> Catalog:
        from sqlalchemy import inspect

        insp = inspect(conn)
        default = insp.default_schema_name
        tables: dict[str, frozenset[str]] = {}
        for schema in insp.get_schema_names():
            if schema.lower() in SYSTEM_SCHEMAS or schema.lower().startswith("pg_"):
                continue
            names = [*insp.get_table_names(schema=schema), *insp.get_view_names(schema=schema)]
            for table in names:
                if table.startswith("_reactive_nb"):
                    continue
                cols = frozenset(c["name"].lower() for c in insp.get_columns(table, schema=schema))
                qualified = table if schema == default else f"{schema}.{table}"
                tables[canonical(qualified, default)] = cols
        return cls(tables, default)

    def canonical(self, name: str) -> str:
        return canonical(name, self.default_schema)

    def resolve(self, entry: str, where: str = "relations") -> str:
        """The table named by a table name, ``schema.table`` or ``table.column`` path."""
        name = self.canonical(entry)
        if name in self.tables:
            return name
        if "." in name:
            table, column = name.rsplit(".", 1)
            if table in self.tables:
                if column in self.tables[table]:
                    return table
                columns = (f"{table}.{c}" for c in self.tables[table])
                raise RelationError(f"{table}.{column}", columns, where)
        raise RelationError(entry, self.tables, where)


@dataclass(frozen=True)
class RelationGraph:
    """Read-only view of the relations: source table -> tables whose readers it makes stale."""

    edges: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: dependencies -> watched tables; every cache hit asks, the edges never change.
    _memo: dict[frozenset[str], frozenset[str]] = field(
        default_factory=dict, init=False, compare=False, repr=False)

    @classmethod
    def parse(cls, relations: Mapping[str, Iterable[str]] | None,
              catalog: Catalog) -> RelationGraph:
        """Resolve every name against the catalog; an unknown one raises RelationError."""
        edges: dict[str, set[str]] = {}
        for source, targets in (relations or {}).items():
            if isinstance(targets, str):
                targets = [targets]
            resolved = {catalog.resolve(t) for t in targets}
            edges.setdefault(catalog.resolve(source), set()).update(resolved)
        return cls({k: frozenset(v) for k, v in edges.items()})

    def watched(self, dependencies: Iterable[str]) -> frozenset[str]:
        """``deps | {T : relations[T] meets deps}`` plus the every-table counter."""
        deps = frozenset(dependencies)
        found = self._memo.get(deps)
        if found is None:
            widened = {source for source, targets in self.edges.items() if targets & deps}
            found = self._memo[deps] = deps | widened | {ALL_TABLES}
        return found




class LiveCatalog:
    """The current ``Catalog`` and ``SchemaFacts`` of a database, re-read after DDL.

    ``note(tables)`` is subscribed to the bus: a committed write naming an unknown table, a
    view, or every table (DDL it could not parse) marks them stale, and the next lookup
    re-reads them. ``_lock`` guards the swap and the memo of expanded dependencies.
    """

    def __init__(self, engine: Engine) -> None:
        import threading

        self._engine = engine
        self._lock = threading.Lock()
        self._catalog = Catalog.inspect(engine)
        self._facts = SchemaFacts.read(engine)
        self._expanded: dict[frozenset[str], frozenset[str]] = {}
        self._stale = False

    @property
    def current(self) -> Catalog:
        if self._stale:
            self.refresh()
        return self._catalog

    @property
    def facts(self) -> SchemaFacts:
        """Views, FK actions, partitions and volatile functions of the database."""
        if self._stale:
            self.refresh()
        return self._facts

    def refresh(self) -> None:
        """Re-read the database's tables and schema facts (after DDL)."""
        catalog, facts = Catalog.inspect(self._engine), SchemaFacts.read(self._engine)
        with self._lock:
            self._catalog, self._facts, self._stale = catalog, facts, False
            self._expanded = {}

    def note(self, tables: Iterable[str]) -> None:
        known, views = self._catalog.tables, self._facts.views
        for name in tables:
            table = name.split("@", 1)[0]  # "agent@tenants" is a counter of agent
            if table == ALL_TABLES or table not in known or table in views:
                self._stale = True
                return

    def read_set(self, dependencies: frozenset[str]) -> frozenset[str]:
        """What reading ``dependencies`` really reads: each view also counts as its base
        tables (recursively), so a write to a base table reaches results over the view."""
        facts = self.facts
        expanded = self._expanded.get(dependencies)
        if expanded is None:
            expanded = dependencies | facts.base_tables(dependencies)
            with self._lock:
                self._expanded[dependencies] = expanded
        return expanded

    def widen_writes(self, tables: frozenset[str]) -> frozenset[str]:
        """What writing ``tables`` really writes: FK actions reach child tables, a write
        into a partition counts for its parent, a write through a view for its bases."""
        if ALL_TABLES in tables:
            return tables
        return self.facts.widen_writes(tables)

    def resolve(self, names: Iterable[str], where: str) -> frozenset[str]:
        """Canonical table names; an unknown one raises RelationError with a suggestion."""
        resolved = set()
        for name in names:
            if name == ALL_TABLES:
                resolved.add(name)
                continue
            try:
                resolved.add(self._catalog.resolve(name, where))
            except RelationError:
                self.refresh()
                resolved.add(self._catalog.resolve(name, where))
        return frozenset(resolved)

    def columns(self, table: str) -> frozenset[str]:
        """Lower-cased column names of a (canonically named) table."""
        catalog = self.current
        return catalog.tables.get(catalog.canonical(table), frozenset())


__all__ = ["Catalog", "LiveCatalog", "RelationGraph", "canonical", "closest"]
