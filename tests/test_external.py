"""External writers (plain psycopg, psql, sqlite3 in other processes) drive live queries."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator

import pandas as pd
import pytest
from sqlalchemy.engine import make_url

import reactive_nb as rnb
from tests.external_writer import psycopg_write
from tests.teamhub import create, wait_for


def define(db: rnb.ReactiveDB) -> tuple[rnb.ReactiveFunction, rnb.ReactiveFunction]:
    @db.reactive(name="agents", dependencies=["agent"])
    def agents(organization_id: str) -> pd.DataFrame:
        return db.read_sql("SELECT id, name FROM agent WHERE organization_id = :o ORDER BY id",
                           o=organization_id)

    @db.reactive(name="tools", dependencies=["tool"])
    def tools() -> pd.DataFrame:
        return db.read_sql("SELECT id FROM tool")

    return agents, tools


@pytest.fixture
def pg(pg_url: str) -> Iterator[rnb.ReactiveDB]:
    create(pg_url)
    db = rnb.connect(pg_url, tenant_column="organization_id")
    yield db
    db.close()


def test_postgres_external_writes(pg: rnb.ReactiveDB, pg_url: str) -> None:
    agents, tools = define(pg)
    assert pg.install_triggers() == ["agent", "tool"]  # what the functions watch
    live, bystander = agents.live(organization_id="acme").wait(10), tools.live().wait(10)
    psycopg_write(pg_url, "INSERT INTO organization VALUES ('initech', 'Initech')")  # untracked
    psycopg_write(pg_url, "INSERT INTO agent (id, organization_id, name) VALUES (5, 'acme', 'p')")
    wait_for(live, lambda df: 5 in set(df["id"]))
    if shutil.which("psql"):
        db_name = make_url(pg_url).database
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", str(db_name), "-c",
                        "INSERT INTO agent (id, organization_id, name) VALUES (6, 'acme', 'q')"],
                       check=True, capture_output=True, timeout=60)
        wait_for(live, lambda df: 6 in set(df["id"]))
    assert bystander.runs == 1  # no write touched tool


def test_postgres_tenant_column_isolates_tenants(pg: rnb.ReactiveDB, pg_url: str) -> None:
    agents, _ = define(pg)
    pg.install_triggers(["agent"])
    acme = agents.live(organization_id="acme", tenant="acme").wait(10)
    globex = agents.live(organization_id="globex", tenant="globex").wait(10)
    psycopg_write(pg_url, "INSERT INTO agent (id, organization_id, name) VALUES (7, 'acme', 'r')")
    wait_for(acme, lambda df: 7 in set(df["id"]))
    psycopg_write(pg_url, "INSERT INTO agent (id, organization_id, name) VALUES (8, 'globex', 's')")
    wait_for(globex, lambda df: 8 in set(df["id"]))
    assert acme.runs == 2 and globex.runs == 2  # each tenant refreshed once, by its own write


def test_postgres_bulk_insert_is_one_refresh(pg: rnb.ReactiveDB, pg_url: str) -> None:
    pg.install_triggers(["audit"])
    count = pg.reactive(name="audit_count", dependencies=["audit"])(
        lambda: pg.read_sql("SELECT COUNT(*) AS n FROM audit"))
    live = count.live().wait(10)
    psycopg_write(pg_url, "INSERT INTO audit (id, note) SELECT g, 'bulk' "
                          "FROM generate_series(1, 100000) g")
    wait_for(live, lambda df: int(df["n"].iloc[0]) == 100_000)
    live.wait(10)
    assert live.runs == 2


def test_postgres_listener_reconnects_without_loss(pg: rnb.ReactiveDB, pg_url: str) -> None:
    agents, _ = define(pg)
    pg.install_triggers(["agent"])
    live = agents.live(organization_id="acme").wait(10)
    terminated = pg.read_sql(
        "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity "
        "WHERE application_name = 'reactive_nb-listener' AND datname = current_database()")
    assert terminated["ok"].all() and len(terminated) == 1
    # written while the listener may be away: the reconnect marks everything stale
    psycopg_write(pg_url, "INSERT INTO agent (id, organization_id, name) VALUES (9, 'acme', 't')")
    wait_for(live, lambda df: 9 in set(df["id"]))
    psycopg_write(pg_url, "INSERT INTO agent (id, organization_id, name) VALUES (10, 'acme', 'u')")
    wait_for(live, lambda df: 10 in set(df["id"]))


def test_own_writes_are_not_refreshed_twice(pg: rnb.ReactiveDB) -> None:
    pg.scheduler.min_interval = 0  # an echo after our refresh would re-run, not coalesce
    agents, _ = define(pg)
    pg.install_triggers(["agent", "audit"])
    live = agents.live(organization_id="acme").wait(10)
    heard = threading.Event()
    pg.execute("INSERT INTO agent (id, organization_id, name) VALUES (11, 'acme', 'v')")
    live.wait(10)
    # a later external-only change proves the listener is alive and its queue drained
    count = pg.reactive(name="audit_n", dependencies=["audit"])(
        lambda: pg.read_sql("SELECT COUNT(*) AS n FROM audit"))
    audit = count.live().wait(10)
    audit.observe(lambda c: heard.set(), names=["df"])
    psycopg_write(pg.engine.url.render_as_string(hide_password=False),
                  "INSERT INTO audit (id, note) VALUES (1, 'x')")
    assert heard.wait(10)
    live.wait(10)
    assert live.runs == 2  # the initial run and the local write; the trigger echo was dropped


def test_install_and_uninstall_leave_database_as_before(pg: rnb.ReactiveDB) -> None:
    catalog = ("SELECT (SELECT COUNT(*) FROM pg_trigger WHERE NOT tgisinternal) AS triggers, "
               "(SELECT COUNT(*) FROM pg_proc) AS procs, "
               "(SELECT COUNT(*) FROM pg_namespace) AS schemas, "
               "(SELECT COUNT(*) FROM pg_class) AS relations")
    before = pg.read_sql(catalog)
    pg.install_triggers(["agent"])
    pg.install_triggers(["agent"])
    assert pg.read_sql(catalog)["triggers"].iloc[0] > before["triggers"].iloc[0]
    pg.uninstall_triggers()
    pd.testing.assert_frame_equal(pg.read_sql(catalog), before)


def test_unknown_table_for_triggers(pg: rnb.ReactiveDB) -> None:
    with pytest.raises(rnb.RelationError, match="did you mean 'agent'"):
        pg.install_triggers(["agnet"])


def test_sqlite_external_process_writes(sqlite_url: str) -> None:
    create(sqlite_url)
    with rnb.connect(sqlite_url) as db:
        agents, tools = define(db)
        db.install_triggers(["agent", "tool"])
        live, bystander = agents.live(organization_id="acme").wait(10), tools.live().wait(10)
        path = sqlite_url.removeprefix("sqlite:///")
        script = ("import sqlite3\nc = sqlite3.connect(" + repr(path) + ")\n"
                  "c.execute(\"INSERT INTO agent (id, organization_id, name) "
                  "VALUES (12, 'acme', 'w')\")\nc.commit()\n")
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        wait_for(live, lambda df: 12 in set(df["id"]))
        assert bystander.runs == 1


def test_sqlite_install_is_explicit(sqlite_url: str) -> None:
    create(sqlite_url)
    with rnb.connect(sqlite_url) as db:
        assert not db.listening  # reading never installs anything
    with rnb.connect(sqlite_url, install=True) as db:
        assert db.listening
        db.uninstall_triggers()
        assert not db.listening


def test_sqlite_own_writes_are_not_refreshed_twice(sqlite_url: str) -> None:
    create(sqlite_url)
    # min_interval=0: an echo arriving after our refresh would re-run at once, not coalesce
    with rnb.connect(sqlite_url, min_interval=0) as db:
        agents, tools = define(db)
        db.install_triggers(["agent", "tool"])
        live, tool_live = agents.live(organization_id="acme").wait(10), tools.live().wait(10)
        db.execute("INSERT INTO agent (id, organization_id, name) VALUES (13, 'acme', 'own')")
        live.wait(10)
        # an external write to another table proves the poller has looked since
        heard = threading.Event()
        tool_live.observe(lambda c: heard.set(), names=["df"])
        path = sqlite_url.removeprefix("sqlite:///")
        script = ("import sqlite3\nc = sqlite3.connect(" + repr(path) + ")\n"
                  "c.execute(\"INSERT INTO tool (id, name) VALUES (3, 'ext')\")\nc.commit()\n")
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        assert heard.wait(10)
        live.wait(10)
        assert live.runs == 2  # the first run and our write; the poller's echo was dropped
