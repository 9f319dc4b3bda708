"""SQLite triggers on the files people have: views, quoted mixed-case names, attached
databases, and DDL by other processes (seen through ``PRAGMA schema_version``)."""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from reactive_nb.capture import sqlite as capture
from reactive_nb.capture.external import ExternalChange
from reactive_nb.errors import CaptureError
from tests.test_capture_sqlite import schema, write_in_subprocess

WAIT = 10.0
Changes = queue.Queue[ExternalChange]
EVERY = frozenset({"*"})


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "faults.db")


@pytest.fixture
def engine(db_path: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(f"sqlite:///{db_path}")
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE agent (id INTEGER PRIMARY KEY, name TEXT)")
        conn.exec_driver_sql('CREATE TABLE "MixedCase" (id INTEGER PRIMARY KEY, x TEXT)')
        conn.exec_driver_sql("CREATE VIEW agent_names AS SELECT name FROM agent")
    yield eng
    eng.dispose()


@pytest.fixture
def start_poller(db_path: str) -> Iterator[Callable[[], Changes]]:
    pollers: list[capture.SqlitePoller] = []

    def start() -> Changes:
        changes: Changes = queue.Queue()
        poller = capture.SqlitePoller(db_path, changes.put)
        pollers.append(poller)
        poller.start()
        return changes

    yield start
    for poller in pollers:
        poller.close()


def test_views_are_skipped(engine: sa.Engine) -> None:
    """Every relation of the file, as the caller lists it, views included."""
    assert capture.install_triggers(engine, ["agent", "agent_names", "mixedcase"]) == [
        "agent", "mixedcase"]
    assert capture.install_triggers(engine, ["agent_names"]) == []
    assert capture.install_triggers(engine, ["*"]) == ["agent", "mixedcase"]
    assert capture.installed_tables(engine) == ["agent", "mixedcase"]
    assert not [row for row in schema(engine) if row[0] == "trigger" and row[2] == "agent_names"]


def test_a_missing_table_is_still_an_error_next_to_a_view(engine: sa.Engine) -> None:
    with pytest.raises(CaptureError, match="did you mean 'agent'") as info:
        capture.install_triggers(engine, ["agent_names", "agnet"])
    assert info.value.table == "agnet"


@pytest.mark.parametrize("requested", ["mixedcase", "MixedCase", '"MixedCase"',
                                       "main.MIXEDCASE"])
def test_a_mixed_case_table_is_reported_by_its_canonical_name(
    engine: sa.Engine, db_path: str, start_poller: Callable[[], Changes], requested: str
) -> None:
    assert capture.install_triggers(engine, [requested]) == ["mixedcase"]
    assert capture.installed_tables(engine) == ["mixedcase"]
    changes = start_poller()
    write_in_subprocess(db_path, """INSERT INTO "MixedCase" (x) VALUES ('a')""")
    assert changes.get(timeout=WAIT).tables == {"mixedcase"}


def test_tables_of_attached_databases_are_skipped(
    engine: sa.Engine, tmp_path: Path
) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY)")
    attached = sa.create_engine(f"sqlite:///{tmp_path / 'faults.db'}")

    @sa.event.listens_for(attached, "connect")
    def attach(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute(f"ATTACH DATABASE '{other}' AS other")

    try:
        assert capture.install_triggers(attached, ["agent", "other.ledger"]) == ["agent"]
        with pytest.raises(CaptureError, match="no such table"):
            capture.install_triggers(attached, ["nowhere.ledger"])
    finally:
        attached.dispose()
    with sqlite3.connect(other) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
                            ).fetchone() == (0,)


@pytest.mark.parametrize("ddl", [
    "ALTER TABLE agent ADD COLUMN email TEXT",
    "CREATE INDEX agent_name ON agent (name)",
    "DROP VIEW agent_names",
    "DROP TABLE agent",
    "CREATE TABLE fresh (id INTEGER)",
])
def test_ddl_by_another_process_reaches_every_table(
    engine: sa.Engine, db_path: str, start_poller: Callable[[], Changes], ddl: str
) -> None:
    capture.install_triggers(engine, ["agent"])
    changes = start_poller()
    write_in_subprocess(db_path, ddl)
    change = changes.get(timeout=WAIT)
    assert (change.tables, change.tenants, change.lost) == (EVERY, None, False)


def test_reinstalling_triggers_is_not_reported_as_ddl(
    engine: sa.Engine, db_path: str, start_poller: Callable[[], Changes]
) -> None:
    capture.install_triggers(engine, ["agent"])
    changes = start_poller()
    capture.install_triggers(engine, ["agent", "mixedcase"])
    write_in_subprocess(db_path, "INSERT INTO agent (name) VALUES ('sentinel')")
    assert changes.get(timeout=WAIT).tables == {"agent"}
    capture.uninstall_triggers(engine)
    write_in_subprocess(db_path, "CREATE TABLE sentinel (x INTEGER)")
    assert changes.get(timeout=WAIT).tables == EVERY  # the next thing seen is real DDL
    assert changes.empty()


def test_a_poll_that_fails_midway_is_retried_not_lost(engine: sa.Engine, db_path: str) -> None:
    """A writer's lock can make a read after ``data_version`` fail; the next poll must
    still see that commit. Driven step by step (the thread itself sleeps for an hour): a
    real writer takes the file's exclusive lock just as the poll reads the change table,
    its last read, and that read fails after the busy timeout."""
    capture.install_triggers(engine, ["agent"])
    got: list[ExternalChange] = []
    poller = capture.SqlitePoller(db_path, got.append, interval=3600)
    poller.start()
    writer = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn = poller.connection
        assert conn is not None
        write_in_subprocess(db_path, "INSERT INTO agent (name) VALUES ('a')")
        reads: list[str] = []

        def lock_at_the_change_table(statement: str) -> None:
            reads.append(statement)
            if f"FROM {capture.CHANGES_TABLE}" in statement and not writer.in_transaction:
                writer.execute("BEGIN EXCLUSIVE")

        conn.set_trace_callback(lock_at_the_change_table)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            poller.poll()
        assert reads[0] == "PRAGMA data_version" and len(reads) > 2  # it failed midway
        assert got == []
        writer.execute("ROLLBACK")
        conn.set_trace_callback(None)
        poller.poll()
        assert [c.tables for c in got] == [{"agent"}]
    finally:
        writer.close()
        poller.close()
