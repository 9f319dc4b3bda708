"""PostgreSQL external capture: statement triggers + NOTIFY and the LISTEN thread, driven
by real writers in other processes (plain psycopg, the psql CLI) on a fresh database."""

from __future__ import annotations

import json
import logging
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import sqlalchemy as sa
from psycopg.conninfo import conninfo_to_dict

from reactive_nb.capture import postgres as capture
from reactive_nb.capture.external import ExternalChange
from reactive_nb.errors import CaptureError, ClosedError
from tests.serving import wait_for

pytestmark = pytest.mark.postgres

WAIT = 10.0
Changes = queue.Queue[ExternalChange]


# --- pure logic ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("payload", "tables", "tenants"),
    [
        ('{"t": "agent", "x": "42"}', {"agent"}, None),
        ('{"t" : "sales.orders", "x" : "7", "k" : ["acme", "globex"]}',
         {"sales.orders"}, {"acme", "globex"}),
        ('{"t": "agent", "x": "1", "k": []}', {"agent"}, set()),
        ('{"t": "agent", "x": "1", "k": null}', {"agent"}, None),
        ('{"t": "sales.events_2024", "x": "3", "p": ["sales.events"], "k": ["acme"]}',
         {"sales.events_2024", "sales.events"}, {"acme"}),
        ('{"t" : "*", "x" : "9"}', {"*"}, None),
    ],
)
def test_parse_payload(payload: str, tables: set[str], tenants: set[str] | None) -> None:
    change = capture.parse_payload(payload)
    assert change.tables == frozenset(tables)
    assert change.tenants == (None if tenants is None else frozenset(tenants))
    assert change.txid == json.loads(payload)["x"]
    assert not change.lost


@pytest.mark.parametrize(
    "payload",
    ["", "garbage", "[]", '{"x": "1"}', '{"t": "", "x": "1"}', '{"t": "a"}',
     '{"t": "a", "x": 1}', '{"t": "a", "x": "1", "k": "acme"}', '{"t": "a", "x": "1", "k": [1]}',
     '{"t": "a", "x": "1", "p": "b"}', '{"t": "a", "x": "1", "p": [""]}'],
)
def test_parse_payload_rejects_malformed(payload: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        capture.parse_payload(payload)


def test_conninfo_from_url_keeps_everything_libpq_needs() -> None:
    info = conninfo_to_dict(capture.conninfo_from_url(
        "postgresql+psycopg://bob:p%40ss%20w@db.example:6543/team hub"
        "?sslmode=require&application_name=nb"))
    assert info == {"host": "db.example", "port": "6543", "user": "bob", "password": "p@ss w",
                    "dbname": "team hub", "sslmode": "require", "application_name": "nb"}
    multi = conninfo_to_dict(capture.conninfo_from_url(
        sa.make_url("postgresql+psycopg://u@/db?host=h1:5432&host=h2:5433")))
    assert (multi["host"], multi["port"]) == ("h1,h2", "5432,5433")


def test_split_and_name_tables() -> None:
    assert capture.split_table("agent") == ("public", "agent")
    assert capture.split_table("sales.orders") == ("sales", "orders")
    assert capture.table_name("public", "agent") == "agent"
    assert capture.table_name("sales", "orders") == "sales.orders"
    assert capture.table_name("public", "MixedCase") == "mixedcase"
    assert capture.table_name("Sales", "Orders") == "sales.orders"
    assert capture.split_table("agent", default_schema="app") == ("app", "agent")
    assert capture.table_name("app", "agent", default_schema="app") == "agent"
    assert capture.table_name("public", "agent", default_schema="app") == "public.agent"


# --- fixtures ------------------------------------------------------------------------

@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(pg_url)
    with eng.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE agent (id serial PRIMARY KEY, organization_id text, name text)")
        conn.exec_driver_sql("CREATE TABLE team (id serial PRIMARY KEY, name text)")
        conn.exec_driver_sql("CREATE TABLE untracked (id serial PRIMARY KEY, x int)")
        conn.exec_driver_sql("CREATE VIEW agent_names AS SELECT name FROM agent")
        conn.exec_driver_sql("CREATE FOREIGN DATA WRAPPER nowhere")
        conn.exec_driver_sql("CREATE SERVER remote FOREIGN DATA WRAPPER nowhere")
        conn.exec_driver_sql("CREATE FOREIGN TABLE remote_agent (id int) SERVER remote")
        conn.exec_driver_sql("CREATE SCHEMA sales")
        conn.exec_driver_sql(
            "CREATE TABLE sales.orders (id serial PRIMARY KEY, organization_id text)")
    yield eng
    eng.dispose()


@pytest.fixture
def conninfo(pg_url: str) -> str:
    return capture.conninfo_from_url(pg_url)


@pytest.fixture
def listen(conninfo: str) -> Iterator[Callable[..., Changes]]:
    """Start a listener on the test database; returns the queue its changes land in."""
    listeners: list[capture.PostgresListener] = []

    def start(**kwargs: object) -> Changes:
        changes: Changes = queue.Queue()
        listener = capture.PostgresListener(conninfo, changes.put, **kwargs)  # type: ignore[arg-type]
        listeners.append(listener)
        listener.start()
        return changes

    yield start
    for listener in listeners:
        listener.close()


@pytest.fixture
def role(engine: sa.Engine) -> Iterator[str]:
    """A login role with no privileges in the test database; dropped afterwards."""
    name = f"rnb_role_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{name}" LOGIN')
    yield name
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE usename = '{name}'")
        conn.exec_driver_sql(f'DROP OWNED BY "{name}"')
        conn.exec_driver_sql(f'DROP ROLE "{name}"')


def as_role(pg_url: str, role: str) -> sa.Engine:
    return sa.create_engine(sa.make_url(pg_url).set(username=role))


def write_in_subprocess(conninfo: str, *statements: str) -> None:
    """Run each statement in its own transaction, in another process with plain psycopg."""
    code = (
        "import psycopg, sys\n"
        "with psycopg.connect(sys.argv[1], autocommit=True) as conn:\n"
        "    for stmt in sys.argv[2:]:\n"
        "        conn.execute(stmt)\n"
    )
    subprocess.run([sys.executable, "-c", code, conninfo, *statements],
                   check=True, timeout=60)


def execute(engine: sa.Engine, *statements: str) -> None:
    """Each statement in its own transaction, through this process's engine."""
    for stmt in statements:
        with engine.begin() as conn:
            conn.exec_driver_sql(stmt)


def catalog(engine: sa.Engine) -> list[tuple[str, str]]:
    """Names in pg_trigger, pg_proc, pg_namespace, pg_class, pg_type, pg_event_trigger."""
    query = """
        SELECT 'trigger', t.tgrelid::regclass::text || ' ' || t.tgname FROM pg_trigger t
        UNION ALL
        SELECT 'proc', n.nspname || '.' || p.proname || '('
                       || pg_get_function_identity_arguments(p.oid) || ')'
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        UNION ALL
        SELECT 'namespace', nspname FROM pg_namespace
        UNION ALL
        SELECT 'class', n.nspname || '.' || c.relname || ' ' || c.relkind::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        UNION ALL
        SELECT 'type', n.nspname || '.' || t.typname
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        UNION ALL
        SELECT 'event trigger', evtname || ' ' || evtevent || ' ' || evtfoid::regproc::text
        FROM pg_event_trigger
    """
    with engine.connect() as conn:
        return sorted((str(a), str(b)) for a, b in conn.exec_driver_sql(query))


def trigger_names(engine: sa.Engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(:t) "
            "AND NOT tgisinternal"), {"t": table}).scalars())


# --- install / uninstall -------------------------------------------------------------

def test_install_twice_then_uninstall_leaves_the_catalog_as_before(engine: sa.Engine) -> None:
    before = catalog(engine)
    assert capture.install_triggers(engine, ["agent", "sales.orders"]) == [
        "agent", "sales.orders"]
    installed = catalog(engine)
    assert installed != before
    assert [row for row in installed if row[0] == "event trigger"] == [
        ("event trigger", "reactive_nb_ddl ddl_command_end reactive_nb.notify_ddl"),
        ("event trigger", "reactive_nb_drop sql_drop reactive_nb.notify_ddl")]
    assert capture.install_triggers(engine, ["agent", "sales.orders"]) == [
        "agent", "sales.orders"]
    assert catalog(engine) == installed  # idempotent
    assert capture.installed_tables(engine) == {"agent": None, "sales.orders": None}
    assert capture.installed_version(engine) == capture.TRIGGER_VERSION
    assert trigger_names(engine, "agent") == {"reactive_nb_change", "reactive_nb_truncate"}
    assert trigger_names(engine, "team") == set()  # never touched
    capture.uninstall_triggers(engine)
    assert catalog(engine) == before
    assert capture.installed_tables(engine) == {}
    assert capture.installed_version(engine) is None
    capture.uninstall_triggers(engine)  # idempotent too


def test_switching_tenant_mode_replaces_the_triggers(engine: sa.Engine) -> None:
    capture.install_triggers(engine, ["agent"])
    capture.install_triggers(engine, ["agent"], tenant_column="organization_id")
    assert capture.installed_tables(engine) == {"agent": "organization_id"}
    assert trigger_names(engine, "agent") == {
        "reactive_nb_insert", "reactive_nb_update", "reactive_nb_delete",
        "reactive_nb_truncate"}
    capture.install_triggers(engine, ["agent"])
    assert capture.installed_tables(engine) == {"agent": None}
    assert trigger_names(engine, "agent") == {"reactive_nb_change", "reactive_nb_truncate"}


def function_body(engine: sa.Engine, name: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.text(
            "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'reactive_nb' AND p.proname = :n"), {"n": name}).scalar_one())


def test_reinstall_after_an_upgrade_replaces_the_functions(engine: sa.Engine) -> None:
    capture.install_triggers(engine, ["agent"])
    # Simulate triggers installed by an older reactive_nb.
    execute(engine,
            "UPDATE reactive_nb.meta SET value = '0' WHERE key = 'trigger_version'",
            "CREATE OR REPLACE FUNCTION reactive_nb.notify_change() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
            "CREATE OR REPLACE FUNCTION reactive_nb.notify_change_tenant() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$")
    assert "pg_notify" not in function_body(engine, "notify_change")
    capture.install_triggers(engine, ["team"])
    assert "pg_notify" in function_body(engine, "notify_change")
    assert "pg_notify" in function_body(engine, "notify_change_tenant")
    assert capture.installed_version(engine) == capture.TRIGGER_VERSION
    assert capture.installed_tables(engine) == {"agent": None, "team": None}


def test_a_newer_installed_version_is_not_downgraded(engine: sa.Engine) -> None:
    capture.install_triggers(engine, ["agent"])
    execute(engine, "UPDATE reactive_nb.meta SET value = '999' WHERE key = 'trigger_version'")
    with pytest.raises(CaptureError, match="upgrade reactive_nb") as info:
        capture.install_triggers(engine, ["team"])
    assert info.value.table == "team"
    assert capture.installed_tables(engine) == {"agent": None}


@pytest.mark.parametrize(
    ("table", "tenant_column", "message"),
    [
        ("agnet", None, "did you mean 'agent'"),
        ("orders", None, "does not exist"),  # it lives in schema sales
        ("remote_agent", None, "a foreign table"),
        ("team", "organization_id", 'tenant column "organization_id" does not exist'),
    ],
)
def test_install_refuses_what_is_not_a_capturable_table(
    engine: sa.Engine, table: str, tenant_column: str | None, message: str
) -> None:
    before = catalog(engine)
    with pytest.raises(CaptureError) as info:
        capture.install_triggers(engine, ["agent", table], tenant_column=tenant_column)
    assert info.value.table == table
    assert message in str(info.value)
    assert catalog(engine) == before  # atomic: "agent" got nothing either


def test_install_without_privileges_reports_the_table_and_the_database_message(
    engine: sa.Engine, pg_url: str, role: str
) -> None:
    database = sa.make_url(pg_url).database
    limited = as_role(pg_url, role)
    try:
        # No CREATE on the database: the schema cannot be created.
        with pytest.raises(CaptureError) as info:
            capture.install_triggers(limited, ["agent"])
        assert info.value.table == "agent"
        assert f"permission denied for database {database}" in str(info.value)
        # CREATE on the database but no TRIGGER privilege on the table.
        execute(engine, f'GRANT CREATE ON DATABASE "{database}" TO "{role}"')
        with pytest.raises(CaptureError) as info:
            capture.install_triggers(limited, ["agent"])
        assert info.value.table == "agent"
        assert "permission denied for table agent" in str(info.value)
    finally:
        limited.dispose()
    assert capture.installed_version(engine) is None  # rolled back: no schema left


def test_write_by_another_role_is_reported(
    engine: sa.Engine, pg_url: str, role: str, listen: Callable[..., Changes]
) -> None:
    """Writers need no privilege on the reactive_nb schema for the triggers to fire."""
    capture.install_triggers(engine, ["agent"], tenant_column="organization_id")
    execute(engine, f'GRANT INSERT ON agent TO "{role}"',
            f'GRANT USAGE ON SEQUENCE agent_id_seq TO "{role}"')
    changes = listen()
    limited = capture.conninfo_from_url(sa.make_url(pg_url).set(username=role))
    write_in_subprocess(limited, "INSERT INTO agent (organization_id) VALUES ('acme')")
    change = changes.get(timeout=WAIT)
    assert (change.tables, change.tenants) == (frozenset({"agent"}), frozenset({"acme"}))


# --- the listener --------------------------------------------------------------------

def test_psycopg_write_in_another_process_is_reported_and_untriggered_tables_are_not(
    engine: sa.Engine, conninfo: str, listen: Callable[..., Changes]
) -> None:
    capture.install_triggers(engine, ["agent"])
    changes = listen()
    # Had the untriggered write produced anything, it would be the first change.
    write_in_subprocess(conninfo, "INSERT INTO untracked (x) VALUES (1)",
                        "INSERT INTO agent (name) VALUES ('ada')")
    change = changes.get(timeout=WAIT)
    assert change.tables == frozenset({"agent"})
    assert change.tenants is None
    assert change.txid.isdigit()
    assert not change.lost


def test_psql_write_is_reported(
    engine: sa.Engine, pg_url: str, listen: Callable[..., Changes]
) -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("the psql client is not installed (a client, not a service)")
    url = sa.make_url(pg_url)
    capture.install_triggers(engine, ["agent"])
    changes = listen()
    subprocess.run(
        [psql, "-X", "-v", "ON_ERROR_STOP=1", "-h", str(url.host), "-p", str(url.port),
         "-U", str(url.username), "-d", str(url.database),
         "-c", "INSERT INTO agent (name) VALUES ('from psql')"],
        check=True, timeout=60, capture_output=True)
    assert changes.get(timeout=WAIT).tables == frozenset({"agent"})


def test_every_statement_kind_is_reported_once_with_schema_qualified_names(
    engine: sa.Engine, listen: Callable[..., Changes]
) -> None:
    capture.install_triggers(engine, ["agent", "sales.orders"])
    changes = listen()
    execute(engine,
            "INSERT INTO sales.orders (organization_id) VALUES ('acme'), ('globex')",
            "UPDATE agent SET name = 'x'",  # no row matches: still one statement
            "INSERT INTO agent (name) VALUES ('a'), ('b'), ('c')",
            "DELETE FROM agent WHERE name = 'a'",
            "TRUNCATE agent")
    got = [changes.get(timeout=WAIT) for _ in range(5)]
    assert [sorted(c.tables) for c in got] == [
        ["sales.orders"], ["agent"], ["agent"], ["agent"], ["agent"]]
    assert all(c.tenants is None for c in got)
    assert len({c.txid for c in got}) == 5  # one transaction each


def test_tenant_values_of_changed_rows_are_sent(
    engine: sa.Engine, listen: Callable[..., Changes]
) -> None:
    capture.install_triggers(engine, ["agent", "team"], tenant_column=None)
    capture.install_triggers(engine, ["agent"], tenant_column="organization_id")
    changes = listen()

    def next_tenants() -> frozenset[str] | None:
        change = changes.get(timeout=WAIT)
        assert change.tables == frozenset({"agent"})
        return change.tenants

    execute(engine, "INSERT INTO agent (organization_id, name) VALUES ('acme', 'a'), "
                    "('acme', 'b')")
    assert next_tenants() == frozenset({"acme"})
    execute(engine, "UPDATE agent SET organization_id = 'globex' WHERE name = 'a'")
    assert next_tenants() == frozenset({"acme", "globex"})
    execute(engine, "DELETE FROM agent WHERE organization_id = 'acme'")
    assert next_tenants() == frozenset({"acme"})
    # A statement that changed no row sends nothing: the next change is team's.
    execute(engine, "UPDATE agent SET name = 'z' WHERE false", "INSERT INTO team DEFAULT VALUES")
    assert changes.get(timeout=WAIT).tables == frozenset({"team"})
    execute(engine, "INSERT INTO agent (organization_id) VALUES (NULL)")
    assert next_tenants() is None  # a NULL tenant: every tenant
    execute(engine, "TRUNCATE agent")
    assert next_tenants() is None


@pytest.mark.parametrize("tenant_column", [None, "organization_id"])
def test_bulk_insert_of_100000_rows_is_one_notification(
    engine: sa.Engine, conninfo: str, listen: Callable[..., Changes],
    tenant_column: str | None,
) -> None:
    capture.install_triggers(engine, ["agent"], tenant_column=tenant_column)
    capture.install_triggers(engine, ["team"])
    changes = listen()
    write_in_subprocess(
        conninfo,
        "INSERT INTO agent (organization_id, name) "
        "SELECT 'acme', 'a' || g FROM generate_series(1, 100000) g",
        "INSERT INTO team (name) VALUES ('sentinel')")
    bulk = changes.get(timeout=WAIT)
    assert bulk.tables == frozenset({"agent"})
    assert bulk.tenants == (None if tenant_column is None else {"acme"})
    assert changes.get(timeout=WAIT).tables == frozenset({"team"})  # nothing in between


def test_too_many_tenants_for_one_payload_means_every_tenant(
    engine: sa.Engine, listen: Callable[..., Changes]
) -> None:
    capture.install_triggers(engine, ["agent"], tenant_column="organization_id")
    changes = listen()
    # 500 values of 10 characters fit in 7900 bytes; 2000 do not.
    execute(engine, "INSERT INTO agent (organization_id) "
                    "SELECT 'tenant' || lpad(g::text, 4, '0') FROM generate_series(1, 500) g")
    fits = changes.get(timeout=WAIT)
    assert fits.tenants is not None and len(fits.tenants) == 500
    assert "tenant0001" in fits.tenants
    execute(engine, "INSERT INTO agent (organization_id) "
                    "SELECT 'tenant' || lpad(g::text, 4, '0') FROM generate_series(1, 2000) g")
    too_many = changes.get(timeout=WAIT)
    assert too_many.tables == frozenset({"agent"})
    assert too_many.tenants is None


def test_a_dropped_tenant_column_does_not_break_writes(
    engine: sa.Engine, listen: Callable[..., Changes]
) -> None:
    capture.install_triggers(engine, ["agent"], tenant_column="organization_id")
    changes = listen()
    execute(engine, "ALTER TABLE agent DROP COLUMN organization_id",
            "INSERT INTO agent (name) VALUES ('still works')")
    assert changes.get(timeout=WAIT).tables == frozenset({"*"})  # the DDL itself
    change = changes.get(timeout=WAIT)
    assert (change.tables, change.tenants) == (frozenset({"agent"}), None)


def test_listener_reconnects_after_its_backend_is_terminated(
    engine: sa.Engine, conninfo: str, listen: Callable[..., Changes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    capture.install_triggers(engine, ["agent"])
    with caplog.at_level(logging.WARNING, logger=capture.__name__):
        changes = listen()
        with engine.begin() as conn:
            killed = conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :app AND datname = current_database()"),
                {"app": capture.APPLICATION_NAME}).scalars().all()
        assert killed == [True]
        lost = changes.get(timeout=WAIT)
        assert lost.lost and lost.all_tables and lost.tables == frozenset({"*"})
        assert lost.tenants is None
        write_in_subprocess(conninfo, "INSERT INTO agent (name) VALUES ('after')")
        after = changes.get(timeout=WAIT)
    assert after.tables == frozenset({"agent"}) and not after.lost
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "lost its connection" in warnings[0].getMessage()


def test_listener_backs_off_while_the_database_refuses_connections(
    engine: sa.Engine, pg_url: str, conninfo: str, listen: Callable[..., Changes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    capture.install_triggers(engine, ["agent"])
    database = sa.make_url(pg_url).database
    admin = sa.create_engine(sa.make_url(pg_url).set(database="postgres"),
                             isolation_level="AUTOCOMMIT")
    try:
        with caplog.at_level(logging.DEBUG, logger=capture.__name__):
            changes = listen(backoff_cap=0.2)
            execute(admin, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false',
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE application_name = '{capture.APPLICATION_NAME}' "
                    f"AND datname = '{database}'")
            wait_for(lambda: sum("reconnect failed" in r.getMessage()
                                 for r in caplog.records) >= 3, WAIT)
            execute(admin, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            assert changes.get(timeout=WAIT).lost
            write_in_subprocess(conninfo, "INSERT INTO agent (name) VALUES ('after')")
            assert changes.get(timeout=WAIT).tables == frozenset({"agent"})
    finally:
        execute(admin, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        admin.dispose()
    failures = [r for r in caplog.records if "reconnect failed" in r.getMessage()]
    assert len(failures) >= 3 and all(r.levelno == logging.DEBUG for r in failures)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_malformed_notifications_are_logged_and_skipped(
    engine: sa.Engine, listen: Callable[..., Changes], caplog: pytest.LogCaptureFixture
) -> None:
    capture.install_triggers(engine, ["agent"])
    with caplog.at_level(logging.WARNING, logger=capture.__name__):
        changes = listen()
        execute(engine, f"NOTIFY {capture.CHANNEL}, 'garbage'",
                "INSERT INTO agent (name) VALUES ('a')")
        assert changes.get(timeout=WAIT).tables == frozenset({"agent"})
    assert any("skipped a notification" in r.getMessage() for r in caplog.records)


def test_on_change_errors_are_logged_and_listening_goes_on(
    engine: sa.Engine, conninfo: str, caplog: pytest.LogCaptureFixture
) -> None:
    capture.install_triggers(engine, ["agent"])
    received: Changes = queue.Queue()
    failed = threading.Event()

    def on_change(change: ExternalChange) -> None:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("boom")
        received.put(change)

    listener = capture.PostgresListener(conninfo, on_change)
    listener.start()
    try:
        with caplog.at_level(logging.ERROR, logger=capture.__name__):
            execute(engine, "INSERT INTO agent (name) VALUES ('a')")
            assert failed.wait(WAIT)
            execute(engine, "INSERT INTO agent (name) VALUES ('b')")
            assert received.get(timeout=WAIT).tables == frozenset({"agent"})
    finally:
        listener.close()
    assert any("on_change failed" in r.getMessage() for r in caplog.records)


def test_custom_channel(engine: sa.Engine, listen: Callable[..., Changes]) -> None:
    changes = listen(channel="elsewhere")
    execute(engine, """NOTIFY elsewhere, '{"t": "team", "x": "1"}'""")
    assert changes.get(timeout=WAIT).tables == frozenset({"team"})


def test_close_is_prompt_and_final(conninfo: str) -> None:
    listener = capture.PostgresListener(conninfo, lambda change: None)
    listener.start()
    started = time.monotonic()
    listener.close()
    assert time.monotonic() - started < 1.0
    assert not [t for t in threading.enumerate() if t.name == capture.THREAD_NAME]
    with pytest.raises(ClosedError):
        listener.start()


def test_start_fails_loudly_when_the_server_is_unreachable() -> None:
    listener = capture.PostgresListener(
        "host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=2",
        lambda change: None)
    with pytest.raises(psycopg.OperationalError):
        listener.start()
    listener.close()
