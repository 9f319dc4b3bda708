"""SQLite external capture: row triggers + change table, and the data_version poller,
driven by real writers in other processes (Python's sqlite3 module and the sqlite3 CLI)."""

from __future__ import annotations

import logging
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from reactive_nb.capture import sqlite as capture
from reactive_nb.capture.external import ExternalChange
from reactive_nb.errors import CaptureError, ClosedError
from tests.serving import wait_for

WAIT = 10.0


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "capture.db")


@pytest.fixture
def engine(db_path: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(f"sqlite:///{db_path}")
    with eng.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE agent (id INTEGER PRIMARY KEY, organization_id TEXT, name TEXT)")
        conn.exec_driver_sql("CREATE TABLE team (id INTEGER PRIMARY KEY, name TEXT)")
        conn.exec_driver_sql("CREATE TABLE untracked (id INTEGER PRIMARY KEY, x INTEGER)")
        conn.exec_driver_sql("CREATE VIEW agent_names AS SELECT name FROM agent")
    yield eng
    eng.dispose()


@pytest.fixture
def start_poller(db_path: str) -> Iterator[Callable[[], queue.Queue[ExternalChange]]]:
    """Start a poller on the test database; returns the queue its changes land in."""
    pollers: list[capture.SqlitePoller] = []

    def start() -> queue.Queue[ExternalChange]:
        changes: queue.Queue[ExternalChange] = queue.Queue()
        poller = capture.SqlitePoller(db_path, changes.put)
        pollers.append(poller)
        poller.start()
        return changes

    yield start
    for poller in pollers:
        poller.close()


def write_in_subprocess(db_path: str, *statements: str) -> None:
    """Run each statement and commit it, in another process with plain sqlite3."""
    code = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "for stmt in sys.argv[2:]:\n"
        "    conn.execute(stmt)\n"
        "    conn.commit()\n"
        "conn.close()\n"
    )
    subprocess.run([sys.executable, "-c", code, db_path, *statements], check=True, timeout=60)


def schema(engine: sa.Engine) -> list[tuple[str, ...]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").all()
    return [tuple(str(v) for v in row) for row in rows]


def test_install_twice_then_uninstall_leaves_the_file_as_before(engine: sa.Engine) -> None:
    before = schema(engine)
    assert capture.install_triggers(engine, ["agent", "team"]) == ["agent", "team"]
    assert capture.install_triggers(engine, ["agent", "team"]) == ["agent", "team"]
    assert capture.installed_tables(engine) == ["agent", "team"]
    triggers = [row for row in schema(engine) if row[0] == "trigger"]
    assert sorted(row[1] for row in triggers) == sorted(
        capture.trigger_name(t, op) for t in ("agent", "team")
        for op in ("insert", "update", "delete"))
    assert all(row[2] != "untracked" for row in triggers)  # never touched
    capture.uninstall_triggers(engine)
    assert capture.installed_tables(engine) == []
    assert schema(engine) == before


def test_install_resolves_names_like_sqlite(engine: sa.Engine) -> None:
    assert capture.install_triggers(engine, ["AGENT", "main.team"]) == ["agent", "team"]
    assert capture.installed_tables(engine) == ["agent", "team"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("agnet", "did you mean 'agent'"),
        ("other.agent", "no such table"),  # "other" is not an attached database
        (capture.CHANGES_TABLE, "own tables"),
    ],
)
def test_install_refuses_what_is_not_a_capturable_table(
    engine: sa.Engine, table: str, message: str
) -> None:
    if table == capture.CHANGES_TABLE:
        capture.install_triggers(engine, ["team"])
    before = schema(engine)
    with pytest.raises(CaptureError) as info:
        capture.install_triggers(engine, ["agent", table])
    assert info.value.table == table
    assert message in str(info.value)
    assert schema(engine) == before  # atomic: "agent" got nothing either


def test_install_on_a_read_only_file_reports_sqlites_message(
    engine: sa.Engine, db_path: str
) -> None:
    read_only = sa.create_engine(f"sqlite:///file:{db_path}?mode=ro&uri=true")
    try:
        with pytest.raises(CaptureError) as info:
            capture.install_triggers(read_only, ["agent"])
    finally:
        read_only.dispose()
    assert info.value.table == "agent"
    assert "readonly" in str(info.value)


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_insert_by_another_process_is_reported_and_untriggered_tables_are_not(
    engine: sa.Engine, db_path: str, journal_mode: str,
    start_poller: Callable[[], queue.Queue[ExternalChange]],
) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"PRAGMA journal_mode={journal_mode}")
    capture.install_triggers(engine, ["agent", "team"])
    changes = start_poller()
    # A write to an untriggered table first: had it produced anything, it would be
    # the first change received.
    write_in_subprocess(
        db_path,
        "INSERT INTO untracked (x) VALUES (1)",
        "INSERT INTO agent (organization_id, name) VALUES ('acme', 'ada')",
    )
    change = changes.get(timeout=WAIT)
    assert change.tables == frozenset({"agent"})
    assert change.tenants is None
    assert not change.lost
    write_in_subprocess(db_path, "UPDATE team SET name = 'x'")  # no row: no bump
    write_in_subprocess(db_path, "DELETE FROM agent")
    assert changes.get(timeout=WAIT).tables == frozenset({"agent"})


def test_insert_by_the_sqlite3_cli_is_reported(
    engine: sa.Engine, db_path: str, start_poller: Callable[[], queue.Queue[ExternalChange]]
) -> None:
    cli = shutil.which("sqlite3")
    if cli is None:
        pytest.skip("the sqlite3 command-line shell is not installed (a client, not a service)")
    capture.install_triggers(engine, ["team"])
    changes = start_poller()
    subprocess.run([cli, db_path, "INSERT INTO team (name) VALUES ('core');"],
                   check=True, timeout=60)
    assert changes.get(timeout=WAIT).tables == frozenset({"team"})


def test_one_transaction_on_two_tables_is_one_change_and_a_rollback_is_none(
    engine: sa.Engine, db_path: str, start_poller: Callable[[], queue.Queue[ExternalChange]]
) -> None:
    capture.install_triggers(engine, ["agent", "team"])
    changes = start_poller()
    run = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "exec(sys.argv[2])\n"
    )
    both = ("conn.execute(\"INSERT INTO agent (name) VALUES ('a')\")\n"
            "conn.execute(\"INSERT INTO team (name) VALUES ('t')\")\n"
            "conn.commit()")
    subprocess.run([sys.executable, "-c", run, db_path, both], check=True, timeout=60)
    assert changes.get(timeout=WAIT).tables == frozenset({"agent", "team"})
    rolled_back = ("conn.execute(\"INSERT INTO agent (name) VALUES ('gone')\")\n"
                   "conn.rollback()\n"
                   "conn.execute(\"INSERT INTO team (name) VALUES ('sentinel')\")\n"
                   "conn.commit()")
    subprocess.run([sys.executable, "-c", run, db_path, rolled_back], check=True, timeout=60)
    # Had the rolled-back insert bumped "agent", it would show up here.
    assert changes.get(timeout=WAIT).tables == frozenset({"team"})


def test_bulk_insert_of_100000_rows_is_one_change(
    engine: sa.Engine, db_path: str, start_poller: Callable[[], queue.Queue[ExternalChange]]
) -> None:
    capture.install_triggers(engine, ["agent", "team"])
    changes = start_poller()
    write_in_subprocess(
        db_path,
        "WITH RECURSIVE s(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM s WHERE v < 100000) "
        "INSERT INTO agent (organization_id, name) SELECT 'acme', 'a' || v FROM s",
    )
    assert changes.get(timeout=WAIT).tables == frozenset({"agent"})
    write_in_subprocess(db_path, "INSERT INTO team (name) VALUES ('sentinel')")
    # One change for the whole statement: the next one is the sentinel's.
    assert changes.get(timeout=WAIT).tables == frozenset({"team"})
    with engine.connect() as conn:
        version = conn.exec_driver_sql(
            f"SELECT version FROM {capture.CHANGES_TABLE} WHERE tbl = 'agent'").scalar()
    assert version == 100_000


def test_poller_started_before_install_sees_changes_once_triggers_exist(
    engine: sa.Engine, db_path: str, start_poller: Callable[[], queue.Queue[ExternalChange]]
) -> None:
    changes = start_poller()
    write_in_subprocess(db_path, "INSERT INTO agent (name) VALUES ('before')")
    capture.install_triggers(engine, ["agent"])
    write_in_subprocess(db_path, "INSERT INTO agent (name) VALUES ('after')")
    change = changes.get(timeout=WAIT)
    assert change.tables == frozenset({"agent"})
    assert changes.empty()


def test_writes_by_this_process_through_another_connection_are_seen(
    engine: sa.Engine, start_poller: Callable[[], queue.Queue[ExternalChange]]
) -> None:
    """data_version moves for every connection but the poller's own, ours included."""
    capture.install_triggers(engine, ["team"])
    changes = start_poller()
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO team (name) VALUES ('mine')")
    assert changes.get(timeout=WAIT).tables == frozenset({"team"})


def test_on_change_errors_are_logged_and_polling_goes_on(
    engine: sa.Engine, db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    capture.install_triggers(engine, ["team"])
    received: queue.Queue[ExternalChange] = queue.Queue()
    calls = 0

    def on_change(change: ExternalChange) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        received.put(change)

    poller = capture.SqlitePoller(db_path, on_change)
    poller.start()
    try:
        with caplog.at_level(logging.ERROR, logger=capture.__name__):
            write_in_subprocess(db_path, "INSERT INTO team (name) VALUES ('a')")
            wait_for(lambda: calls > 0, WAIT)
            write_in_subprocess(db_path, "INSERT INTO team (name) VALUES ('b')")
            assert received.get(timeout=WAIT).tables == frozenset({"team"})
    finally:
        poller.close()
    assert any("on_change failed" in r.getMessage() for r in caplog.records)


class SteppedPoller(capture.SqlitePoller):
    """A poller whose loop the test steps: each wait between two polls is recorded (with
    its timeout) and returns only when the test grants one more poll, or at close. The
    test counts polls with no clock at all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts: list[float | None] = []
        self._step = threading.Condition()
        self._grants = 0
        self._closing = False

    def grant(self) -> None:
        with self._step:
            self._grants += 1
            self._step.notify_all()

    def reached(self, waits: int) -> bool:
        """Block until the loop has begun its `waits`-th wait (False after WAIT seconds)."""
        with self._step:
            return self._step.wait_for(lambda: len(self.timeouts) >= waits, WAIT)

    def close(self) -> None:
        with self._step:
            self._closing = True
            self._step.notify_all()
        super().close()

    def wait(self, timeout: float | None = None) -> bool:
        """Stands in for the loop's `stop.wait(interval)`."""
        with self._step:
            self.timeouts.append(timeout)
            self._step.notify_all()
            self._step.wait_for(lambda: self._grants > 0 or self._closing)
            if self._closing:
                return True
            self._grants -= 1
            return False

    def is_set(self) -> bool:
        """Stands in for the loop's `stop.is_set()`."""
        with self._step:
            return self._closing

    def _run(self, stop: threading.Event) -> None:
        super()._run(self)  # type: ignore[arg-type]  # the stop event, as the test steps it


def test_idle_poller_waits_its_interval_between_polls_of_one_pragma(
    engine: sa.Engine, db_path: str
) -> None:
    # Why an idle poller is nearly free, without timing it: its loop blocks for
    # `interval` before every poll, and an idle poll is one `PRAGMA data_version`.
    # Its CPU share is measured in benchmarks/bench_external.py (External 3).
    capture.install_triggers(engine, ["team"])
    poller = SteppedPoller(db_path, lambda change: None, interval=0.5)
    statements: list[str] = []
    poller.start()
    try:
        assert poller.reached(1)  # the loop waits before its first poll
        conn = poller.connection  # idle in its wait: safe to trace from here
        assert conn is not None
        conn.set_trace_callback(statements.append)
        for waits in range(2, 7):
            poller.grant()  # one poll, then the next wait
            assert poller.reached(waits)
        assert statements == ["PRAGMA data_version"] * 5
    finally:
        poller.close()
    assert poller.timeouts == [0.5] * 6


def test_close_is_prompt_and_final(db_path: str, engine: sa.Engine) -> None:
    poller = capture.SqlitePoller(db_path, lambda change: None, interval=0.2)
    poller.start()
    started = time.monotonic()
    poller.close()
    assert time.monotonic() - started < 1.0
    assert not [t for t in threading.enumerate() if t.name == capture.THREAD_NAME]
    with pytest.raises(ClosedError):
        poller.start()
    with pytest.raises(ValueError, match="in-memory"):
        capture.SqlitePoller(":memory:", lambda change: None)


def test_a_missing_file_fails_at_start(tmp_path: Path) -> None:
    import sqlite3

    poller = capture.SqlitePoller(str(tmp_path / "nope.db"), lambda change: None)
    with pytest.raises(sqlite3.OperationalError):
        poller.start()
    poller.close()
