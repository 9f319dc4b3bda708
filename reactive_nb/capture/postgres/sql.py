"""The SQL of the PostgreSQL triggers that report writes: one ``NOTIFY`` per statement.

Writes made by any client (a web app, a worker, ``psql``) reach reactive_nb through
triggers installed explicitly by ``install_triggers``: one ``NOTIFY`` per statement,
never per row, so bulk loads stay cheap. The payload is JSON,
``{"t": "<table>", "x": "<txid>", "p": ["<parent>", ...], "k": ["<tenant>", ...]}``:
``"p"`` lists the partitioned (or inheritance) parents of a written partition, up to the
top level, and is present only for such tables; ``"k"`` is present only when a tenant
column was given and the distinct tenant values fit in the payload. DDL by any client
(when the installing role may create event triggers) sends ``{"t": "*", "x": "<txid>"}``:
every table may have changed. Names are canonical: lower-case, bare in the database's
default schema (``current_schema()`` at install time), ``schema.table`` elsewhere.

This module builds that SQL (the trigger functions, the DDL event trigger function, the
catalog queries) and holds the naming rule; :mod:`reactive_nb.capture.postgres.triggers`
runs it.
"""

from __future__ import annotations

from reactive_nb.capture.quoting import ident as _ident
from reactive_nb.capture.quoting import literal as _literal

__all__ = [
    "ALL_TRIGGERS", "CHANNEL", "DEFAULT_SCHEMA", "EVENT_TRIGGERS", "EVERY_TABLE", "FN_DDL",
    "FN_DDL_SQL", "FN_PLAIN", "FN_TENANT", "MAX_PAYLOAD_BYTES", "OUR_EVENT_TRIGGERS_SQL",
    "OUR_TRIGGERS_SQL", "RELATIONS_SQL", "SCHEMA", "TRIGGER_VERSION", "canonical",
    "fn_plain_sql", "fn_tenant_sql", "qualified", "split_table", "table_name",
]

#: Version of the trigger functions' SQL; bump it whenever that SQL changes, so that a
#: re-install over an older version replaces the functions.
TRIGGER_VERSION = 2

#: The NOTIFY channel the trigger functions send on.
CHANNEL = "reactive_nb"

SCHEMA = "reactive_nb"
DEFAULT_SCHEMA = "public"

#: ``install_triggers(engine, [EVERY_TABLE])`` installs on every table of the database.
EVERY_TABLE = "*"

#: PostgreSQL refuses payloads of 8000 bytes or more; past this size "k" is dropped.
MAX_PAYLOAD_BYTES = 7900

FN_PLAIN = "notify_change"
FN_TENANT = "notify_change_tenant"
FN_DDL = "notify_ddl"
# Trigger names per mode. Transition tables with both OLD and NEW need one trigger
# per event, hence three triggers in tenant mode; TRUNCATE has no transition table.
_TRIGGERS_PLAIN = ("reactive_nb_change", "reactive_nb_truncate")
_TRIGGERS_TENANT = ("reactive_nb_insert", "reactive_nb_update", "reactive_nb_delete",
                    "reactive_nb_truncate")
ALL_TRIGGERS = frozenset(_TRIGGERS_PLAIN + _TRIGGERS_TENANT)
# Event triggers: ddl_command_end sees every DDL command but reports no objects for a
# DROP; sql_drop reports those, so a DROP of a temporary table can be told apart.
EVENT_TRIGGERS = (("reactive_nb_ddl", "ddl_command_end"), ("reactive_nb_drop", "sql_drop"))


def _name_sql(schema: str, name: str, default_schema: str) -> str:
    """SQL for the canonical name of the relation ``schema``.``name`` (SQL expressions)."""
    return (f"CASE WHEN {schema} = {_literal(default_schema)} "
            f"THEN pg_catalog.lower({name}::text) "
            f"ELSE pg_catalog.lower({schema}::text) || '.' || pg_catalog.lower({name}::text) END")


def _declarations(default_schema: str) -> str:
    """Declarations every table trigger function starts with: its own name, its parents.

    The default schema is baked in at install time (and the functions re-created when it
    changes) rather than read from ``current_schema()`` when the trigger fires: that is
    the *writer's* search_path, which may differ from reactive_nb's, and names that do
    not match reactive_nb's would silently miss invalidations.
    """
    return f"""
    tbl text := {_name_sql("TG_TABLE_SCHEMA", "TG_TABLE_NAME", default_schema)};
    up json;"""


def _parents(default_schema: str) -> str:
    """Statements filling ``up`` with the names of every ancestor (partitioned parents,
    inheritance parents), looked up when the trigger fires so that attaching or detaching
    a partition needs no re-install. The EXISTS probe first: it costs a table without
    parents about 2 us per statement, the recursive query about 7 us (measured)."""
    parents = _name_sql("n.nspname", "c.relname", default_schema)
    return f"""
    IF EXISTS (SELECT FROM pg_catalog.pg_inherits i WHERE i.inhrelid = TG_RELID) THEN
        up := (WITH RECURSIVE anc(oid) AS (
                SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = TG_RELID
                UNION
                SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN anc ON i.inhrelid = anc.oid)
            SELECT pg_catalog.json_agg({parents})
            FROM anc JOIN pg_catalog.pg_class c ON c.oid = anc.oid
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace);
    END IF;"""


def fn_plain_sql(default_schema: str) -> str:
    body = f"""
-- reactive_nb trigger v{TRIGGER_VERSION}: one NOTIFY per statement, every tenant.
DECLARE{_declarations(default_schema)}
BEGIN{_parents(default_schema)}
    PERFORM pg_catalog.pg_notify('{CHANNEL}', pg_catalog.json_strip_nulls(
        pg_catalog.json_build_object(
            't', tbl, 'x', pg_catalog.txid_current()::text, 'p', up))::text);
    RETURN NULL;
END
"""
    return (f"CREATE OR REPLACE FUNCTION {SCHEMA}.{FN_PLAIN}() RETURNS trigger "
            f"LANGUAGE plpgsql AS {_literal(body)}")


# TG_ARGV[0] names the tenant column. "k" is left out (= every tenant) when a changed
# row has a NULL tenant, when the column is gone, or when the payload would pass
# MAX_PAYLOAD_BYTES. 2700 distinct values can never fit (each costs >= 3 bytes), so
# the DISTINCT stops collecting there. A statement that changed no row sends nothing.
def fn_tenant_sql(default_schema: str) -> str:
    body = f"""
-- reactive_nb trigger v{TRIGGER_VERSION}: one NOTIFY per statement with its tenants.
DECLARE{_declarations(default_schema)}
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
    END IF;{_parents(default_schema)}
    payload := pg_catalog.json_strip_nulls(pg_catalog.json_build_object(
        't', tbl, 'x', pg_catalog.txid_current()::text, 'p', up, 'k', keys))::text;
    IF has_null OR keys IS NULL OR pg_catalog.octet_length(payload) > {MAX_PAYLOAD_BYTES} THEN
        payload := pg_catalog.json_strip_nulls(pg_catalog.json_build_object(
            't', tbl, 'x', pg_catalog.txid_current()::text, 'p', up))::text;
    END IF;
    PERFORM pg_catalog.pg_notify('{CHANNEL}', payload);
    RETURN NULL;
END
"""
    return (f"CREATE OR REPLACE FUNCTION {SCHEMA}.{FN_TENANT}() RETURNS trigger "
            f"LANGUAGE plpgsql AS {_literal(body)}")


# DDL that touches only temporary objects (nobody else's) or reactive_nb's own objects
# (installing triggers changes no data) sends nothing; any other DDL means "every table".
# A DROP reports its objects to sql_drop only, so ddl_command_end leaves DROPs to it.
# REFRESH MATERIALIZED VIEW fires ddl_command_end (PostgreSQL 15), so a refresh by
# another client is reported as well. This function runs inside every DDL command of
# the database: it must never fail, so it only reads its own event's data.
_FN_DDL_BODY = f"""
-- reactive_nb event trigger v{TRIGGER_VERSION}: DDL by any client changes every table.
BEGIN
    IF TG_EVENT = 'sql_drop' THEN
        IF NOT EXISTS (
            SELECT FROM pg_catalog.pg_event_trigger_dropped_objects() d
            WHERE NOT d.is_temporary AND d.schema_name IS DISTINCT FROM '{SCHEMA}'
            AND NOT (d.object_type = 'trigger'
                     AND d.object_identity LIKE 'reactive\\_nb\\_% on %')) THEN
            RETURN;
        END IF;
    ELSIF TG_TAG LIKE 'DROP %' THEN
        RETURN;
    ELSIF EXISTS (SELECT FROM pg_catalog.pg_event_trigger_ddl_commands()) AND NOT EXISTS (
            SELECT FROM pg_catalog.pg_event_trigger_ddl_commands() c
            WHERE c.schema_name IS DISTINCT FROM 'pg_temp'
            AND c.schema_name IS DISTINCT FROM '{SCHEMA}'
            AND NOT (c.object_type = 'schema' AND c.object_identity = '{SCHEMA}')
            AND NOT (c.object_type = 'trigger'
                     AND c.object_identity LIKE 'reactive\\_nb\\_% on %')) THEN
        RETURN;
    END IF;
    PERFORM pg_catalog.pg_notify('{CHANNEL}', pg_catalog.json_build_object(
        't', '*', 'x', pg_catalog.txid_current()::text)::text);
END
"""
FN_DDL_SQL = (f"CREATE OR REPLACE FUNCTION {SCHEMA}.{FN_DDL}() RETURNS event_trigger "
               f"LANGUAGE plpgsql AS {_literal(_FN_DDL_BODY)}")

OUR_TRIGGERS_SQL = f"""
SELECT n.nspname, c.relname, t.tgname, t.tgargs
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE pn.nspname = '{SCHEMA}' AND NOT t.tgisinternal
ORDER BY n.nspname, c.relname, t.tgname
"""

OUR_EVENT_TRIGGERS_SQL = f"""
SELECT e.evtname FROM pg_catalog.pg_event_trigger e
JOIN pg_catalog.pg_proc p ON p.oid = e.evtfoid
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE pn.nspname = '{SCHEMA}' ORDER BY e.evtname
"""

# Every relation a user may name; system schemas, other sessions' temporary schemas and
# reactive_nb's own are left out.
RELATIONS_SQL = f"""
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relispartition
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
AND n.nspname <> ALL (ARRAY['information_schema', '{SCHEMA}']) AND n.nspname !~ '^pg_'
"""


# --- names -------------------------------------------------------------------------

def split_table(table: str, default_schema: str = DEFAULT_SCHEMA) -> tuple[str, str]:
    """``"agent"`` -> ``("public", "agent")``; ``"sales.orders"`` -> ``("sales", "orders")``."""
    schema, dot, name = table.partition(".")
    return (schema, name) if dot else (default_schema, table)


def table_name(schema: str, name: str, default_schema: str = DEFAULT_SCHEMA) -> str:
    """reactive_nb's name of a table: lower-case; bare in the default schema, else
    ``schema.name`` (the same rule the trigger functions apply)."""
    name = name.lower()
    return name if schema == default_schema else f"{schema.lower()}.{name}"


def canonical(table: str, default_schema: str) -> str:
    """A requested name (``Agent``, ``"MixedCase"``, ``app.agent``) in canonical form."""
    parts = [part.strip().strip('"').lower() for part in table.split(".", 1)]
    if len(parts) == 2 and parts[0] == default_schema.lower():
        return parts[1]
    return ".".join(parts)


def qualified(schema: str, name: str) -> str:
    return f"{_ident(schema)}.{_ident(name)}"

