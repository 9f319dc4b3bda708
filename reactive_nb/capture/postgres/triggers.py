"""PostgreSQL triggers that report writes: statement-level, one ``NOTIFY`` per statement.

Writes made by any client (a web app, a worker, ``psql``) reach reactive_nb through
triggers installed explicitly by ``install_triggers``: one ``NOTIFY`` per statement,
never per row, so bulk loads stay cheap. The payload is JSON,
``{"t": "<table>", "x": "<txid>", "k": ["<tenant>", ...]}``; ``"k"`` is present only
when a tenant column was given and the distinct tenant values fit in the payload.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import sqlalchemy

from reactive_nb.capture.quoting import ident as _ident
from reactive_nb.capture.quoting import literal as _literal
from reactive_nb.errors import CaptureError, closest

logger = logging.getLogger(__name__)

#: Version of the trigger functions' SQL; bump it whenever that SQL changes, so that a
#: re-install over an older version replaces the functions.
TRIGGER_VERSION = 1

#: The NOTIFY channel the trigger functions send on.
CHANNEL = "reactive_nb"

SCHEMA = "reactive_nb"
DEFAULT_SCHEMA = "public"
THREAD_NAME = "reactive_nb-pg-listener"
APPLICATION_NAME = "reactive_nb-listener"

#: PostgreSQL refuses payloads of 8000 bytes or more; past this size "k" is dropped.
MAX_PAYLOAD_BYTES = 7900

_VERSION_KEY = "trigger_version"
# Serialises concurrent installs/uninstalls (CREATE OR REPLACE FUNCTION and CREATE
# SCHEMA race otherwise). An arbitrary constant: "rnb" in ASCII.
_LOCK_ID = 0x726E62
_FN_PLAIN = "notify_change"
_FN_TENANT = "notify_change_tenant"
# Trigger names per mode. Transition tables with both OLD and NEW need one trigger
# per event, hence three triggers in tenant mode; TRUNCATE has no transition table.
_TRIGGERS_PLAIN = ("reactive_nb_change", "reactive_nb_truncate")
_TRIGGERS_TENANT = ("reactive_nb_insert", "reactive_nb_update", "reactive_nb_delete",
                    "reactive_nb_truncate")
_ALL_TRIGGERS = frozenset(_TRIGGERS_PLAIN + _TRIGGERS_TENANT)


_TABLE_EXPR = ("CASE WHEN TG_TABLE_SCHEMA = 'public' THEN TG_TABLE_NAME "
               "ELSE TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME END")

_FN_PLAIN_SQL = f"""
CREATE OR REPLACE FUNCTION {SCHEMA}.{_FN_PLAIN}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
-- reactive_nb trigger v{TRIGGER_VERSION}: one NOTIFY per statement, every tenant.
BEGIN
    PERFORM pg_catalog.pg_notify('{CHANNEL}', pg_catalog.json_build_object(
        't', {_TABLE_EXPR},
        'x', pg_catalog.txid_current()::text)::text);
    RETURN NULL;
END
$fn$
"""

# TG_ARGV[0] names the tenant column. "k" is left out (= every tenant) when a changed
# row has a NULL tenant, when the column is gone, or when the payload would pass
# MAX_PAYLOAD_BYTES. 2700 distinct values can never fit (each costs >= 3 bytes), so
# the DISTINCT stops collecting there. A statement that changed no row sends nothing.
_FN_TENANT_SQL = f"""
CREATE OR REPLACE FUNCTION {SCHEMA}.{_FN_TENANT}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
-- reactive_nb trigger v{TRIGGER_VERSION}: one NOTIFY per statement with its tenants.
DECLARE
    tbl text := {_TABLE_EXPR};
    col text := pg_catalog.quote_ident(TG_ARGV[0]);
    rows_sql text;
    keys json;
    has_null boolean;
    payload text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        rows_sql := 'SELECT ' || col || '::text AS k FROM new_rows';
    ELSIF TG_OP = 'DELETE' THEN
        rows_sql := 'SELECT ' || col || '::text AS k FROM old_rows';
    ELSE
        rows_sql := 'SELECT ' || col || '::text AS k FROM new_rows UNION ALL SELECT '
                    || col || '::text FROM old_rows';
    END IF;
    BEGIN
        EXECUTE 'SELECT pg_catalog.json_agg(k) FILTER (WHERE k IS NOT NULL), '
                || 'pg_catalog.bool_or(k IS NULL) FROM (SELECT DISTINCT k FROM ('
                || rows_sql || ') r LIMIT 2700) d'
            INTO keys, has_null;
    EXCEPTION WHEN undefined_column THEN
        has_null := true;
    END;
    IF has_null IS NULL THEN
        RETURN NULL;
    END IF;
    payload := pg_catalog.json_build_object(
        't', tbl, 'x', pg_catalog.txid_current()::text, 'k', keys)::text;
    IF has_null OR keys IS NULL OR pg_catalog.octet_length(payload) > {MAX_PAYLOAD_BYTES} THEN
        payload := pg_catalog.json_build_object(
            't', tbl, 'x', pg_catalog.txid_current()::text)::text;
    END IF;
    PERFORM pg_catalog.pg_notify('{CHANNEL}', payload);
    RETURN NULL;
END
$fn$
"""

_OUR_TRIGGERS_SQL = f"""
SELECT n.nspname, c.relname, t.tgname, t.tgargs
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE pn.nspname = '{SCHEMA}' AND NOT t.tgisinternal
ORDER BY n.nspname, c.relname, t.tgname
"""


# --- names -------------------------------------------------------------------------

def split_table(table: str) -> tuple[str, str]:
    """``"agent"`` -> ``("public", "agent")``; ``"sales.orders"`` -> ``("sales", "orders")``."""
    schema, dot, name = table.partition(".")
    return (schema, name) if dot else (DEFAULT_SCHEMA, table)


def table_name(schema: str, name: str) -> str:
    """reactive_nb's name of a table: bare in the default schema, else ``schema.name``."""
    return name if schema == DEFAULT_SCHEMA else f"{schema}.{name}"


def _qualified(schema: str, name: str) -> str:
    return f"{_ident(schema)}.{_ident(name)}"


# --- install / uninstall -----------------------------------------------------------

def _exec(conn: sqlalchemy.Connection, statement: str) -> None:
    # no_parameters: the driver must not look for %-placeholders in DDL bodies.
    conn.exec_driver_sql(statement, execution_options={"no_parameters": True})


def _db_message(exc: sqlalchemy.exc.DBAPIError) -> str:
    """The database's own message for a failed statement, without SQLAlchemy's frame."""
    diag = getattr(exc.orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    return str(primary) if primary else str(exc.orig).strip()


def install_triggers(
    engine: sqlalchemy.Engine, tables: Iterable[str], tenant_column: str | None = None
) -> list[str]:
    """Install change-capture triggers on ``tables``; return the tables installed.

    Idempotent, and atomic: either every table gets its triggers or nothing changes.
    Creates the ``reactive_nb`` schema, its ``meta`` table and the trigger functions
    when missing or older than ``TRIGGER_VERSION``. Tables not named are never
    touched. Raises ``CaptureError`` naming the table when it does not exist, is not a
    table, lacks ``tenant_column``, or the database refuses (e.g. permissions).
    """
    wanted = list(dict.fromkeys(tables))
    if not wanted:
        return []
    current = wanted[0]  # the table an error is reported against
    try:
        with engine.begin() as conn:
            _exec(conn, f"SELECT pg_catalog.pg_advisory_xact_lock({_LOCK_ID})")
            oids = _resolve_tables(conn, wanted, tenant_column)
            _ensure_functions(conn, current)
            replace = (conn.dialect.server_version_info or (0,)) >= (14,)
            for table in wanted:
                current = table
                _install_one(conn, table, oids[table], tenant_column, replace)
    except sqlalchemy.exc.DBAPIError as exc:
        raise CaptureError(current, _db_message(exc)) from exc
    return wanted


def _resolve_tables(
    conn: sqlalchemy.Connection, wanted: list[str], tenant_column: str | None
) -> dict[str, int]:
    """Oid of each wanted table; CaptureError if one is missing or unsuitable."""
    rows = conn.execute(sqlalchemy.text(
        "SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema', :ours)"
    ), {"ours": SCHEMA}).all()
    known = {table_name(r.nspname, r.relname): (int(r.oid), str(r.relkind)) for r in rows}
    oids: dict[str, int] = {}
    for table in wanted:
        if table not in known:
            suggestion = closest(table, known)
            hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
            raise CaptureError(table, f'relation "{table}" does not exist{hint}')
        oid, kind = known[table]
        if kind not in ("r", "p"):
            raise CaptureError(table, "not a table: triggers capture tables only")
        oids[table] = oid
    if tenant_column is not None:
        for table, oid in oids.items():
            found = conn.execute(sqlalchemy.text(
                "SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = :oid "
                "AND attname = :col AND attnum > 0 AND NOT attisdropped"
            ), {"oid": oid, "col": tenant_column}).first()
            if found is None:
                raise CaptureError(table, f'tenant column "{tenant_column}" does not exist')
    return oids


def _ensure_functions(conn: sqlalchemy.Connection, table: str) -> None:
    """Create the schema, meta table and functions unless the current version is there.

    Only what is missing or outdated is created, so a role that may create triggers
    but does not own the schema can still install on more tables.
    """
    has_schema = conn.execute(sqlalchemy.text(
        "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = :s"), {"s": SCHEMA}).first()
    if has_schema is None:
        _exec(conn, f"CREATE SCHEMA {SCHEMA}")
    has_meta = conn.execute(sqlalchemy.text(
        "SELECT pg_catalog.to_regclass(:t) IS NOT NULL"), {"t": f"{SCHEMA}.meta"}).scalar()
    if not has_meta:
        _exec(conn, f"CREATE TABLE {SCHEMA}.meta (key text PRIMARY KEY, value text)")
    raw = conn.execute(sqlalchemy.text(
        f"SELECT value FROM {SCHEMA}.meta WHERE key = :k"), {"k": _VERSION_KEY}).scalar()
    try:
        installed = int(raw) if raw is not None else 0
    except ValueError:
        installed = 0
    if installed > TRIGGER_VERSION:
        raise CaptureError(table, f"reactive_nb triggers of version {installed} are "
                           f"installed, newer than this reactive_nb's {TRIGGER_VERSION}: "
                           "upgrade reactive_nb")
    functions = conn.execute(sqlalchemy.text(
        "SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
        "ON n.oid = p.pronamespace WHERE n.nspname = :s AND p.proname IN (:a, :b)"
    ), {"s": SCHEMA, "a": _FN_PLAIN, "b": _FN_TENANT}).scalar()
    if installed == TRIGGER_VERSION and functions == 2:
        return
    _exec(conn, _FN_PLAIN_SQL)
    _exec(conn, _FN_TENANT_SQL)
    conn.execute(sqlalchemy.text(
        f"INSERT INTO {SCHEMA}.meta (key, value) VALUES (:k, :v) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
    ), {"k": _VERSION_KEY, "v": str(TRIGGER_VERSION)})


def _install_one(
    conn: sqlalchemy.Connection, table: str, oid: int, tenant_column: str | None,
    replace: bool,
) -> None:
    target = _qualified(*split_table(table))
    plain = f"EXECUTE FUNCTION {SCHEMA}.{_FN_PLAIN}()"
    if tenant_column is None:
        wanted = {
            "reactive_nb_change": f"AFTER INSERT OR UPDATE OR DELETE ON {target} "
                                  f"FOR EACH STATEMENT {plain}",
        }
    else:
        tenant = f"EXECUTE FUNCTION {SCHEMA}.{_FN_TENANT}({_literal(tenant_column)})"
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
    ), {"oid": oid}).scalars())
    # Triggers of the other tenant mode go; the wanted ones are (re)created.
    for name in sorted((existing & _ALL_TRIGGERS) - set(wanted)):
        _exec(conn, f"DROP TRIGGER {_ident(name)} ON {target}")
    for name, definition in wanted.items():
        if replace:
            _exec(conn, f"CREATE OR REPLACE TRIGGER {_ident(name)} {definition}")
        else:
            if name in existing:
                _exec(conn, f"DROP TRIGGER {_ident(name)} ON {target}")
            _exec(conn, f"CREATE TRIGGER {_ident(name)} {definition}")


def uninstall_triggers(engine: sqlalchemy.Engine) -> None:
    """Remove every reactive_nb trigger, the functions, the meta table and the schema.

    The database is then as it was before the first install. Objects a user added to
    the ``reactive_nb`` schema make this fail (``DROP SCHEMA`` without CASCADE) rather
    than be destroyed.
    """
    current = SCHEMA
    try:
        with engine.begin() as conn:
            _exec(conn, f"SELECT pg_catalog.pg_advisory_xact_lock({_LOCK_ID})")
            for row in conn.execute(sqlalchemy.text(_OUR_TRIGGERS_SQL)).all():
                current = table_name(row.nspname, row.relname)
                _exec(conn, f"DROP TRIGGER IF EXISTS {_ident(row.tgname)} "
                            f"ON {_qualified(row.nspname, row.relname)}")
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
    """Tables with reactive_nb triggers -> their tenant column (None: no tenants)."""
    result: dict[str, str | None] = {}
    with engine.connect() as conn:
        for row in conn.execute(sqlalchemy.text(_OUR_TRIGGERS_SQL)):
            name = table_name(row.nspname, row.relname)
            args = [a for a in bytes(row.tgargs).split(b"\x00") if a]
            column = args[0].decode() if args else None
            if result.get(name) is None:
                result[name] = column
    return result


def installed_version(engine: sqlalchemy.Engine) -> int | None:
    """The TRIGGER_VERSION recorded in the database, or None when not installed."""
    with engine.connect() as conn:
        if not conn.execute(sqlalchemy.text(
                "SELECT pg_catalog.to_regclass(:t) IS NOT NULL"), {"t": f"{SCHEMA}.meta"}
                ).scalar():
            return None
        raw = conn.execute(sqlalchemy.text(
            f"SELECT value FROM {SCHEMA}.meta WHERE key = :k"), {"k": _VERSION_KEY}).scalar()
    return int(raw) if raw is not None and str(raw).isdigit() else None
