"""Installing, removing and listing the PostgreSQL change-capture triggers.

The SQL they run (trigger functions, payload format, catalog queries) is built in
:mod:`reactive_nb.capture.postgres.sql`. Every install and uninstall is one transaction
under an advisory lock, so concurrent ones do not race.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import NamedTuple

import sqlalchemy

from reactive_nb.capture.postgres.sql import (
    ALL_TRIGGERS,
    EVENT_TRIGGERS,
    EVERY_TABLE,
    FN_DDL,
    FN_DDL_SQL,
    FN_PLAIN,
    FN_TENANT,
    OUR_EVENT_TRIGGERS_SQL,
    OUR_TRIGGERS_SQL,
    RELATIONS_SQL,
    SCHEMA,
    TRIGGER_VERSION,
    canonical,
    fn_plain_sql,
    fn_tenant_sql,
    qualified,
    table_name,
)
from reactive_nb.capture.quoting import ident as _ident
from reactive_nb.capture.quoting import literal as _literal
from reactive_nb.errors import CaptureError, closest

__all__ = ["install_triggers", "installed_tables", "installed_version", "uninstall_triggers"]

logger = logging.getLogger(__name__)

_VERSION_KEY = "trigger_version"
_DEFAULT_SCHEMA_KEY = "default_schema"
# Serialises concurrent installs/uninstalls (CREATE OR REPLACE FUNCTION and CREATE
# SCHEMA race otherwise). An arbitrary constant: "rnb" in ASCII.
_LOCK_ID = 0x726E62
_INSUFFICIENT_PRIVILEGE = "42501"
# Databases (URLs) whose missing event trigger was already warned about in this process.
_warned_no_event_trigger: set[str] = set()


class _Relation(NamedTuple):
    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind
    is_partition: bool


# --- install / uninstall -----------------------------------------------------------

def _exec(conn: sqlalchemy.Connection, statement: str) -> None:
    # no_parameters: the driver must not look for %-placeholders in DDL bodies.
    conn.exec_driver_sql(statement, execution_options={"no_parameters": True})


def _db_message(exc: sqlalchemy.exc.DBAPIError) -> str:
    """The database's own message for a failed statement, without SQLAlchemy's frame."""
    diag = getattr(exc.orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    return str(primary) if primary else str(exc.orig).strip()


def _default_schema(conn: sqlalchemy.Connection) -> str:
    """``current_schema()``: the schema whose tables reactive_nb names bare.

    Empty when no schema of the search_path exists; every name is then qualified, as in
    reactive_nb's catalog.
    """
    return str(conn.execute(sqlalchemy.text("SELECT current_schema()")).scalar() or "")


def install_triggers(
    engine: sqlalchemy.Engine, tables: Iterable[str], tenant_column: str | None = None
) -> list[str]:
    """Install change-capture triggers on ``tables``; return the tables installed.

    Names are matched like reactive_nb's catalog (case-insensitive, bare in the default
    schema); ``"*"`` means every table. Views and materialized views are skipped and
    left out of the result: their writes land in base tables (a refresh by another
    client is reported by the DDL event trigger). Every partition (and inheritance
    child) of a named table gets the triggers too, reporting its parents as well;
    partitions created later need another ``install_triggers``. The result holds the
    canonical names of the named tables, in order. When the role may create event
    triggers (superuser), DDL by any client is reported as "every table"; otherwise
    one warning is logged and the rest is installed.

    Idempotent, and atomic: either every table gets its triggers or nothing changes.
    Creates the ``reactive_nb`` schema, its ``meta`` table and the trigger functions
    when missing or older than ``TRIGGER_VERSION``. Tables not named (other than
    partitions of named ones) are never touched. Raises ``CaptureError`` naming the
    table when it does not exist, is a foreign table, lacks ``tenant_column``, or the
    database refuses (e.g. permissions).
    """
    wanted = list(dict.fromkeys(tables))
    if not wanted:
        return []
    current = wanted[0]  # the table an error is reported against
    try:
        with engine.begin() as conn:
            _exec(conn, f"SELECT pg_catalog.pg_advisory_xact_lock({_LOCK_ID})")
            default_schema = _default_schema(conn)
            resolved = _resolve_tables(conn, wanted, tenant_column, default_schema)
            if not resolved:
                return []
            current = next(iter(resolved))
            _ensure_functions(conn, current, default_schema)
            replace = (conn.dialect.server_version_info or (0,)) >= (14,)
            done: set[int] = set()
            for table, relations in resolved.items():
                current = table
                for relation in relations:
                    if relation.oid not in done:
                        done.add(relation.oid)
                        _install_one(conn, relation, tenant_column, replace)
            _ensure_event_triggers(conn, engine)
    except sqlalchemy.exc.DBAPIError as exc:
        raise CaptureError(current, _db_message(exc)) from exc
    return list(resolved)


def _resolve_tables(
    conn: sqlalchemy.Connection, wanted: list[str], tenant_column: str | None,
    default_schema: str,
) -> dict[str, list[_Relation]]:
    """Canonical name of each wanted table -> the relations that get triggers: the
    table(s) of that name and their partitions. Views are left out; CaptureError if a
    name is missing or unsuitable."""
    relations = [_Relation(int(r.oid), str(r.nspname), str(r.relname), str(r.relkind),
                           bool(r.relispartition))
                 for r in conn.execute(sqlalchemy.text(RELATIONS_SQL))]
    by_oid = {rel.oid: rel for rel in relations}
    known: dict[str, list[_Relation]] = {}
    for rel in sorted(relations, key=lambda r: (r.schema, r.name)):
        known.setdefault(table_name(rel.schema, rel.name, default_schema), []).append(rel)
    children: dict[int, list[int]] = {}
    for child, parent in conn.execute(sqlalchemy.text(
            "SELECT inhrelid, inhparent FROM pg_catalog.pg_inherits")):
        children.setdefault(int(parent), []).append(int(child))

    names: list[str] = []
    for table in wanted:
        if table.strip() == EVERY_TABLE:
            names += sorted(name for name, rels in known.items()
                            if any(r.kind in ("r", "p") and not r.is_partition for r in rels))
        else:
            names.append(table)
    resolved: dict[str, list[_Relation]] = {}
    for table in names:
        name = canonical(table, default_schema)
        if name in resolved:
            continue
        if name not in known:
            suggestion = closest(name, known)
            hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
            raise CaptureError(table, f'relation "{table}" does not exist{hint}')
        rels = [r for r in known[name] if r.kind not in ("v", "m")]
        if not rels:
            continue  # a view: its writes land in its base tables
        if any(r.kind == "f" for r in rels):
            raise CaptureError(table, "a foreign table: triggers capture local tables only")
        if tenant_column is not None:
            for rel in rels:
                _check_tenant_column(conn, table, rel, tenant_column)
        resolved[name] = _with_descendants(rels, children, by_oid)
    return resolved


def _with_descendants(rels: list[_Relation], children: dict[int, list[int]],
                      by_oid: dict[int, _Relation]) -> list[_Relation]:
    """``rels`` and their partitions / inheritance children at every depth.

    A statement trigger fires only for the table a statement names, so a write made
    directly into a partition needs the partition's own trigger. Foreign partitions are
    skipped: their rows live on another server.
    """
    out: list[_Relation] = []
    seen: set[int] = set()
    pending = list(rels)
    while pending:
        rel = pending.pop(0)
        if rel.oid in seen or rel.kind not in ("r", "p"):
            continue
        seen.add(rel.oid)
        out.append(rel)
        pending += [by_oid[c] for c in children.get(rel.oid, []) if c in by_oid]
    return out


def _check_tenant_column(conn: sqlalchemy.Connection, table: str, rel: _Relation,
                         tenant_column: str) -> None:
    found = conn.execute(sqlalchemy.text(
        "SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = :oid "
        "AND attname = :col AND attnum > 0 AND NOT attisdropped"
    ), {"oid": rel.oid, "col": tenant_column}).first()
    if found is None:
        raise CaptureError(table, f'tenant column "{tenant_column}" does not exist')


def _meta(conn: sqlalchemy.Connection, key: str) -> str | None:
    value = conn.execute(sqlalchemy.text(
        f"SELECT value FROM {SCHEMA}.meta WHERE key = :k"), {"k": key}).scalar()
    return None if value is None else str(value)


def _set_meta(conn: sqlalchemy.Connection, key: str, value: str) -> None:
    conn.execute(sqlalchemy.text(
        f"INSERT INTO {SCHEMA}.meta (key, value) VALUES (:k, :v) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"), {"k": key, "v": value})


def _has_meta(conn: sqlalchemy.Connection) -> bool:
    return bool(conn.execute(sqlalchemy.text(
        "SELECT pg_catalog.to_regclass(:t) IS NOT NULL"), {"t": f"{SCHEMA}.meta"}).scalar())


def _ensure_functions(conn: sqlalchemy.Connection, table: str, default_schema: str) -> None:
    """Create the schema, meta table and functions unless the current version is there.

    Only what is missing or outdated is created, so a role that may create triggers
    but does not own the schema can still install on more tables. The functions are
    re-created when the database's default schema changed since they were.
    """
    has_schema = conn.execute(sqlalchemy.text(
        "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = :s"), {"s": SCHEMA}).first()
    if has_schema is None:
        _exec(conn, f"CREATE SCHEMA {SCHEMA}")
    if not _has_meta(conn):
        _exec(conn, f"CREATE TABLE {SCHEMA}.meta (key text PRIMARY KEY, value text)")
    raw = _meta(conn, _VERSION_KEY)
    installed = int(raw) if raw is not None and raw.isdigit() else 0
    if installed > TRIGGER_VERSION:
        raise CaptureError(table, f"reactive_nb triggers of version {installed} are "
                           f"installed, newer than this reactive_nb's {TRIGGER_VERSION}: "
                           "upgrade reactive_nb")
    functions = conn.execute(sqlalchemy.text(
        "SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
        "ON n.oid = p.pronamespace WHERE n.nspname = :s AND p.proname IN (:a, :b, :c)"
    ), {"s": SCHEMA, "a": FN_PLAIN, "b": FN_TENANT, "c": FN_DDL}).scalar()
    if (installed == TRIGGER_VERSION and functions == 3
            and _meta(conn, _DEFAULT_SCHEMA_KEY) == default_schema):
        return
    _exec(conn, fn_plain_sql(default_schema))
    _exec(conn, fn_tenant_sql(default_schema))
    _exec(conn, FN_DDL_SQL)
    _set_meta(conn, _VERSION_KEY, str(TRIGGER_VERSION))
    _set_meta(conn, _DEFAULT_SCHEMA_KEY, default_schema)


def _ensure_event_triggers(conn: sqlalchemy.Connection, engine: sqlalchemy.Engine) -> None:
    """Create the DDL event triggers if missing; without the privilege (only superusers
    may create them), warn once per database and go on: table writes are still seen."""
    existing = set(conn.execute(sqlalchemy.text(OUR_EVENT_TRIGGERS_SQL)).scalars())
    missing = [(name, event) for name, event in EVENT_TRIGGERS if name not in existing]
    if not missing:
        return
    try:
        with conn.begin_nested():
            for name, event in missing:
                _exec(conn, f"CREATE EVENT TRIGGER {_ident(name)} ON {event} "
                            f"EXECUTE FUNCTION {SCHEMA}.{FN_DDL}()")
    except sqlalchemy.exc.DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != _INSUFFICIENT_PRIVILEGE:
            raise
        key = engine.url.render_as_string(hide_password=True)
        if key not in _warned_no_event_trigger:
            _warned_no_event_trigger.add(key)
            logger.warning("reactive_nb triggers installed without the DDL event trigger "
                           "(%s): DDL by other clients (ALTER, DROP, REFRESH MATERIALIZED "
                           "VIEW) will not be reported; a superuser can add it by "
                           "running install_triggers", _db_message(exc))


def _install_one(
    conn: sqlalchemy.Connection, relation: _Relation, tenant_column: str | None,
    replace: bool,
) -> None:
    target = qualified(relation.schema, relation.name)
    plain = f"EXECUTE FUNCTION {SCHEMA}.{FN_PLAIN}()"
    if tenant_column is None:
        wanted = {
            "reactive_nb_change": f"AFTER INSERT OR UPDATE OR DELETE ON {target} "
                                  f"FOR EACH STATEMENT {plain}",
        }
    else:
        tenant = f"EXECUTE FUNCTION {SCHEMA}.{FN_TENANT}({_literal(tenant_column)})"
        wanted = {
            "reactive_nb_insert": f"AFTER INSERT ON {target} REFERENCING NEW TABLE AS "
                                  f"new_rows FOR EACH STATEMENT {tenant}",
            "reactive_nb_update": f"AFTER UPDATE ON {target} REFERENCING OLD TABLE AS "
                                  f"old_rows NEW TABLE AS new_rows FOR EACH STATEMENT {tenant}",
            "reactive_nb_delete": f"AFTER DELETE ON {target} REFERENCING OLD TABLE AS "
                                  f"old_rows FOR EACH STATEMENT {tenant}",
        }
    wanted["reactive_nb_truncate"] = f"AFTER TRUNCATE ON {target} FOR EACH STATEMENT {plain}"
    existing = set(conn.execute(sqlalchemy.text(
        "SELECT tgname FROM pg_catalog.pg_trigger WHERE tgrelid = :oid AND NOT tgisinternal"
    ), {"oid": relation.oid}).scalars())
    # Triggers of the other tenant mode go; the wanted ones are (re)created.
    for name in sorted((existing & ALL_TRIGGERS) - set(wanted)):
        _exec(conn, f"DROP TRIGGER {_ident(name)} ON {target}")
    for name, definition in wanted.items():
        if replace:
            _exec(conn, f"CREATE OR REPLACE TRIGGER {_ident(name)} {definition}")
        else:
            if name in existing:
                _exec(conn, f"DROP TRIGGER {_ident(name)} ON {target}")
            _exec(conn, f"CREATE TRIGGER {_ident(name)} {definition}")


def uninstall_triggers(engine: sqlalchemy.Engine) -> None:
    """Remove every reactive_nb trigger and event trigger, the functions, the meta table
    and the schema.

    The database is then as it was before the first install. Objects a user added to
    the ``reactive_nb`` schema make this fail (``DROP SCHEMA`` without CASCADE) rather
    than be destroyed.
    """
    current = SCHEMA
    try:
        with engine.begin() as conn:
            _exec(conn, f"SELECT pg_catalog.pg_advisory_xact_lock({_LOCK_ID})")
            # First, so that the rest of the uninstall is not reported as DDL.
            for name in conn.execute(sqlalchemy.text(OUR_EVENT_TRIGGERS_SQL)).scalars().all():
                _exec(conn, f"DROP EVENT TRIGGER IF EXISTS {_ident(name)}")
            for row in conn.execute(sqlalchemy.text(OUR_TRIGGERS_SQL)).all():
                current = table_name(row.nspname, row.relname)
                _exec(conn, f"DROP TRIGGER IF EXISTS {_ident(row.tgname)} "
                            f"ON {qualified(row.nspname, row.relname)}")
            current = SCHEMA
            functions = conn.execute(sqlalchemy.text(
                "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p "
                "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :s"
            ), {"s": SCHEMA}).scalars().all()
            for signature in functions:
                _exec(conn, f"DROP FUNCTION IF EXISTS {signature}")
            _exec(conn, f"DROP TABLE IF EXISTS {SCHEMA}.meta")
            _exec(conn, f"DROP SCHEMA IF EXISTS {SCHEMA}")
    except sqlalchemy.exc.DBAPIError as exc:
        raise CaptureError(current, _db_message(exc)) from exc


def installed_tables(engine: sqlalchemy.Engine) -> dict[str, str | None]:
    """Tables with reactive_nb triggers (partitions included) -> their tenant column
    (None: no tenants), named as the triggers report them."""
    result: dict[str, str | None] = {}
    with engine.connect() as conn:
        default_schema = (_meta(conn, _DEFAULT_SCHEMA_KEY) if _has_meta(conn) else None)
        if default_schema is None:
            default_schema = _default_schema(conn)
        for row in conn.execute(sqlalchemy.text(OUR_TRIGGERS_SQL)):
            name = table_name(row.nspname, row.relname, default_schema)
            args = [a for a in bytes(row.tgargs).split(b"\x00") if a]
            column = args[0].decode() if args else None
            if result.get(name) is None:
                result[name] = column
    return result


def installed_version(engine: sqlalchemy.Engine) -> int | None:
    """The TRIGGER_VERSION recorded in the database, or None when not installed."""
    with engine.connect() as conn:
        if not _has_meta(conn):
            return None
        raw = _meta(conn, _VERSION_KEY)
    return int(raw) if raw is not None and raw.isdigit() else None
