"""PostgreSQL triggers on the databases people have: views, partitions, quoted names, a
default schema other than ``public``, DDL and multi-table transactions by other clients.

Writers run in other processes (plain psycopg, psql); events are checked at the listener.
"""

from __future__ import annotations

import logging
import queue
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from reactive_nb.capture import postgres as capture
from reactive_nb.capture.external import ExternalChange
from reactive_nb.errors import CaptureError
from tests.test_capture_postgres import catalog, execute, write_in_subprocess

pytestmark = pytest.mark.postgres

WAIT = 10.0
Changes = queue.Queue[ExternalChange]
EVERY = frozenset({"*"})


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(pg_url)
    execute(eng,
            "CREATE TABLE agent (id serial PRIMARY KEY, organization_id text, name text)",
            "CREATE TABLE message (id serial PRIMARY KEY, "
            "agent_id int REFERENCES agent ON DELETE CASCADE, body text)",
            "CREATE VIEW agent_names AS SELECT name FROM agent",
            "CREATE MATERIALIZED VIEW agent_counts AS SELECT count(*) AS n FROM agent")
    yield eng
    eng.dispose()


@pytest.fixture
def conninfo(pg_url: str) -> str:
    return capture.conninfo_from_url(pg_url)


@pytest.fixture
def listen(conninfo: str) -> Iterator[Callable[[], Changes]]:
    listeners: list[capture.PostgresListener] = []

    def start() -> Changes:
        changes: Changes = queue.Queue()
        listener = capture.PostgresListener(conninfo, changes.put)
        listeners.append(listener)
        listener.start()
        return changes

    yield start
    for listener in listeners:
        listener.close()


def tables_of(changes: Changes) -> frozenset[str]:
    change = changes.get(timeout=WAIT)
    assert not change.lost
    return change.tables


def psql(pg_url: str, *commands: str) -> None:
    """Run ``commands`` through the psql client (one session, each its own transaction)."""
    client = shutil.which("psql")
    if client is None:
        pytest.skip("the psql client is not installed (a client, not a service)")
    url = sa.make_url(pg_url)
    args = [client, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(url.host), "-p",
            str(url.port), "-U", str(url.username), "-d", str(url.database)]
    for command in commands:
        args += ["-c", command]
    subprocess.run(args, check=True, timeout=60, capture_output=True)


def trigger_tables(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.exec_driver_sql(
            "SELECT DISTINCT tgrelid::regclass::text FROM pg_trigger t JOIN pg_proc p "
            "ON p.oid = t.tgfoid WHERE p.pronamespace = 'reactive_nb'::regnamespace"
        ).scalars())


def event_triggers(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.exec_driver_sql("SELECT evtname FROM pg_event_trigger").scalars())


# --- 1. views ------------------------------------------------------------------------

def test_views_and_materialized_views_are_skipped(engine: sa.Engine) -> None:
    """Every relation of the database, as the caller lists it, views included."""
    everything = ["agent", "agent_counts", "agent_names", "message"]
    assert capture.install_triggers(engine, everything) == ["agent", "message"]
    assert capture.installed_tables(engine) == {"agent": None, "message": None}
    assert capture.install_triggers(engine, ["agent_names"]) == []
    assert capture.install_triggers(engine, ["agent_counts"], "organization_id") == []
    assert trigger_tables(engine) == {"agent", "message"}


def test_star_means_every_table_and_skips_views(engine: sa.Engine) -> None:
    execute(engine, "CREATE SCHEMA sales", "CREATE TABLE sales.orders (id int)")
    assert capture.install_triggers(engine, ["*"]) == ["agent", "message", "sales.orders"]
    assert trigger_tables(engine) == {"agent", "message", "sales.orders"}


def test_a_missing_table_is_still_an_error_next_to_a_view(engine: sa.Engine) -> None:
    with pytest.raises(CaptureError, match="did you mean 'agent'") as info:
        capture.install_triggers(engine, ["agent_names", "agnet"])
    assert info.value.table == "agnet"


# --- 2. partitions -------------------------------------------------------------------

@pytest.fixture
def partitioned(engine: sa.Engine) -> sa.Engine:
    execute(engine,
            "CREATE SCHEMA metrics",
            "CREATE TABLE metrics.events (id int, org text, year int) PARTITION BY LIST (year)",
            "CREATE TABLE metrics.events_2023 PARTITION OF metrics.events FOR VALUES IN (2023)",
            "CREATE TABLE metrics.events_2024 PARTITION OF metrics.events FOR VALUES IN (2024) "
            "PARTITION BY LIST (org)",
            "CREATE TABLE metrics.events_2024_acme PARTITION OF metrics.events_2024 "
            "FOR VALUES IN ('acme')")
    return engine


@pytest.mark.parametrize("tenant_column", [None, "org"])
def test_a_write_into_a_partition_reports_the_partition_and_its_parents(
    partitioned: sa.Engine, conninfo: str, listen: Callable[[], Changes],
    tenant_column: str | None,
) -> None:
    assert capture.install_triggers(partitioned, ["metrics.events"], tenant_column) == [
        "metrics.events"]
    assert trigger_tables(partitioned) == {
        "metrics.events", "metrics.events_2023", "metrics.events_2024",
        "metrics.events_2024_acme"}
    changes = listen()
    write_in_subprocess(
        conninfo,
        "INSERT INTO metrics.events_2023 VALUES (1, 'acme', 2023)",
        "INSERT INTO metrics.events_2024_acme VALUES (2, 'acme', 2024)",
        "INSERT INTO metrics.events VALUES (3, 'acme', 2023)",
        "TRUNCATE metrics.events_2023")
    first = changes.get(timeout=WAIT)
    assert first.tables == {"metrics.events_2023", "metrics.events"}
    assert first.tenants == (None if tenant_column is None else {"acme"})
    assert tables_of(changes) == {
        "metrics.events_2024_acme", "metrics.events_2024", "metrics.events"}
    # Through the parent: its own statement trigger (the layer above adds the partitions).
    assert tables_of(changes) == {"metrics.events"}
    assert tables_of(changes) == {"metrics.events_2023", "metrics.events"}


def test_a_partition_added_later_is_captured_after_a_reinstall(
    partitioned: sa.Engine, conninfo: str, listen: Callable[[], Changes]
) -> None:
    capture.install_triggers(partitioned, ["metrics.events"])
    changes = listen()
    write_in_subprocess(
        conninfo,
        "CREATE TABLE metrics.events_2025 PARTITION OF metrics.events FOR VALUES IN (2025)")
    assert tables_of(changes) == EVERY  # the DDL itself reaches every result
    capture.install_triggers(partitioned, ["metrics.events"])
    write_in_subprocess(conninfo, "INSERT INTO metrics.events_2025 VALUES (1, 'a', 2025)")
    assert tables_of(changes) == {"metrics.events_2025", "metrics.events"}


def test_inheritance_children_report_their_parent(
    engine: sa.Engine, conninfo: str, listen: Callable[[], Changes]
) -> None:
    execute(engine, "CREATE TABLE city (name text)",
            "CREATE TABLE capital (country text) INHERITS (city)")
    assert capture.install_triggers(engine, ["city"]) == ["city"]
    changes = listen()
    write_in_subprocess(conninfo, "INSERT INTO capital VALUES ('Paris', 'France')")
    assert tables_of(changes) == {"capital", "city"}


# --- 3. identifiers and the default schema -------------------------------------------

@pytest.mark.parametrize("tenant_column", [None, "OrgId"])
@pytest.mark.parametrize("requested", ["mixedcase", "MixedCase", '"MixedCase"',
                                       "public.MixedCase"])
def test_a_quoted_mixed_case_table_is_reported_by_its_canonical_name(
    engine: sa.Engine, conninfo: str, listen: Callable[[], Changes], requested: str,
    tenant_column: str | None,
) -> None:
    execute(engine, 'CREATE TABLE "MixedCase" (id int, "OrgId" text)',
            'CREATE SCHEMA "Sales"', 'CREATE TABLE "Sales"."Order Lines" (id int, "OrgId" text)')
    assert capture.install_triggers(engine, [requested, "sales.order lines"],
                                    tenant_column) == ["mixedcase", "sales.order lines"]
    assert capture.installed_tables(engine) == {
        "mixedcase": tenant_column, "sales.order lines": tenant_column}
    changes = listen()
    write_in_subprocess(conninfo, """INSERT INTO "MixedCase" VALUES (1, 'acme')""",
                        """INSERT INTO "Sales"."Order Lines" VALUES (1, 'acme')""")
    assert tables_of(changes) == {"mixedcase"}
    assert tables_of(changes) == {"sales.order lines"}


@pytest.fixture
def app_schema(pg_url: str) -> Iterator[sa.Engine]:
    """A database whose default schema is ``app`` (search_path = app, public)."""
    database = sa.make_url(pg_url).database
    setup = sa.create_engine(pg_url)
    execute(setup, f'ALTER DATABASE "{database}" SET search_path = app, public',
            "CREATE SCHEMA app", "CREATE SCHEMA analytics",
            "CREATE TABLE app.agent (id serial PRIMARY KEY, name text)",
            "CREATE TABLE public.legacy (id int)",
            "CREATE TABLE analytics.events (id int)")
    setup.dispose()
    eng = sa.create_engine(pg_url)  # new connections: the new search_path
    yield eng
    eng.dispose()


def test_the_default_schema_is_current_schema_not_public(
    app_schema: sa.Engine, conninfo: str, listen: Callable[[], Changes]
) -> None:
    with app_schema.connect() as conn:
        assert conn.exec_driver_sql("SELECT current_schema()").scalar() == "app"
    assert capture.install_triggers(
        app_schema, ["agent", "analytics.events", "public.legacy"]) == [
        "agent", "analytics.events", "public.legacy"]
    assert capture.install_triggers(app_schema, ["app.agent"]) == ["agent"]
    assert capture.installed_tables(app_schema) == {
        "agent": None, "analytics.events": None, "public.legacy": None}
    changes = listen()
    # A writer with another search_path: names still follow the database's default schema.
    write_in_subprocess(conninfo, "SET search_path = public",
                        "INSERT INTO app.agent (name) VALUES ('a')",
                        "INSERT INTO legacy VALUES (1)",
                        "INSERT INTO analytics.events VALUES (1)")
    assert [tables_of(changes) for _ in range(3)] == [
        {"agent"}, {"public.legacy"}, {"analytics.events"}]


# --- 4. DDL by other clients ---------------------------------------------------------

def test_ddl_by_psql_reaches_every_table(
    engine: sa.Engine, pg_url: str, listen: Callable[[], Changes]
) -> None:
    capture.install_triggers(engine, ["agent"])
    assert event_triggers(engine) == {"reactive_nb_ddl", "reactive_nb_drop"}
    changes = listen()
    for ddl in ("ALTER TABLE agent ADD COLUMN email text",
                "CREATE INDEX agent_name ON agent (name)",
                "REFRESH MATERIALIZED VIEW agent_counts",
                "ALTER TABLE agent DROP COLUMN email",
                "DROP TABLE message"):
        psql(pg_url, ddl)
        change = changes.get(timeout=WAIT)
        assert (change.tables, change.tenants, change.lost) == (EVERY, None, False), ddl
        assert change.txid.isdigit()
    # Temporary tables are nobody else's, and reinstalling changes no data: only the
    # sentinel insert arrives.
    psql(pg_url, "CREATE TEMP TABLE scratch (x int)", "DROP TABLE scratch")
    capture.install_triggers(engine, ["agent"])
    psql(pg_url, "INSERT INTO agent (name) VALUES ('sentinel')")
    assert tables_of(changes) == {"agent"}


def test_ddl_by_a_role_without_rights_on_reactive_nb_works_and_is_reported(
    engine: sa.Engine, pg_url: str, listen: Callable[[], Changes]
) -> None:
    """The event trigger runs inside everybody's DDL: it must never make DDL fail."""
    role = f"rnb_role_{uuid.uuid4().hex[:10]}"
    database = sa.make_url(pg_url).database
    capture.install_triggers(engine, ["agent"])
    execute(engine, f'CREATE ROLE "{role}" LOGIN',
            f'GRANT CREATE ON DATABASE "{database}" TO "{role}"')
    changes = listen()
    try:
        write_in_subprocess(
            capture.conninfo_from_url(sa.make_url(pg_url).set(username=role)),
            f'CREATE SCHEMA "{role}"', f'CREATE TABLE "{role}".t (x int)',
            f'DROP TABLE "{role}".t', "CREATE TEMP TABLE scratch (x int)")
        assert [tables_of(changes) for _ in range(3)] == [EVERY] * 3
    finally:
        execute(engine, f'DROP OWNED BY "{role}"', f'DROP ROLE "{role}"')


def test_without_the_right_to_create_event_triggers_the_rest_is_installed(
    engine: sa.Engine, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    role = f"rnb_role_{uuid.uuid4().hex[:10]}"
    database = sa.make_url(pg_url).database
    execute(engine, f'CREATE ROLE "{role}" LOGIN', f'GRANT CREATE ON DATABASE "{database}" '
            f'TO "{role}"', f'ALTER TABLE agent OWNER TO "{role}"')
    limited = sa.create_engine(sa.make_url(pg_url).set(username=role))
    try:
        with caplog.at_level(logging.WARNING, logger=capture.__name__):
            assert capture.install_triggers(limited, ["agent"]) == ["agent"]
            assert capture.install_triggers(limited, ["agent"]) == ["agent"]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "DDL by other clients" in warnings[0].getMessage()
        assert capture.installed_tables(engine) == {"agent": None}
        assert event_triggers(engine) == set()
        capture.uninstall_triggers(limited)
    finally:
        limited.dispose()
        execute(engine, f'REASSIGN OWNED BY "{role}" TO postgres', f'DROP OWNED BY "{role}"',
                f'DROP ROLE "{role}"')


def test_uninstall_leaves_the_catalog_as_before(partitioned: sa.Engine) -> None:
    before = catalog(partitioned)
    capture.install_triggers(partitioned, ["*"])
    capture.install_triggers(partitioned, ["metrics.events"], tenant_column="org")
    assert event_triggers(partitioned) == {"reactive_nb_ddl", "reactive_nb_drop"}
    assert "metrics.events_2024_acme" in trigger_tables(partitioned)
    capture.uninstall_triggers(partitioned)
    assert event_triggers(partitioned) == set()
    assert catalog(partitioned) == before


# --- 5. multi-table transactions ------------------------------------------------------

def test_a_two_table_transaction_reports_both_tables(
    engine: sa.Engine, pg_url: str, listen: Callable[[], Changes]
) -> None:
    capture.install_triggers(engine, ["agent", "message"])
    changes = listen()
    psql(pg_url, "BEGIN; INSERT INTO agent (id, name) VALUES (100, 'a'); "
                 "INSERT INTO message (agent_id) VALUES (100); "
                 "INSERT INTO message (agent_id) VALUES (100); COMMIT;")
    got = [changes.get(timeout=WAIT) for _ in range(2)]
    assert sorted(t for c in got for t in c.tables) == ["agent", "message"]
    assert len({c.txid for c in got}) == 1  # one transaction: one id, two events
    psql(pg_url, "INSERT INTO agent (name) VALUES ('sentinel')")  # the repeat collapsed
    assert tables_of(changes) == {"agent"}


def test_an_on_delete_cascade_reports_parent_and_child(
    engine: sa.Engine, conninfo: str, listen: Callable[[], Changes]
) -> None:
    capture.install_triggers(engine, ["agent", "message"], tenant_column=None)
    execute(engine, "INSERT INTO agent (id, name) VALUES (1, 'a'), (2, 'b')",
            "INSERT INTO message (agent_id) VALUES (1), (2), (2)")
    changes = listen()
    write_in_subprocess(conninfo, "DELETE FROM agent")
    got = [changes.get(timeout=WAIT) for _ in range(2)]
    assert {t for c in got for t in c.tables} == {"agent", "message"}
    assert len({c.txid for c in got}) == 1
