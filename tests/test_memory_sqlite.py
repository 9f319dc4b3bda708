"""``rnb.connect("sqlite://")``, what a user tries first: one in-memory database shared by
every thread of the connection (the workers included), transactions that do not leak
into each other, and a silent close."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

import reactive_nb as rnb
from tests.teamhub import wait_for


def define(db: rnb.ReactiveDB) -> Any:
    @db.reactive(name="notes.all", dependencies=["note"])
    def notes() -> Any:
        return db.read_sql("SELECT id, body FROM note ORDER BY id")

    return notes


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_a_live_query_on_worker_threads_reads_the_shared_memory_database(
        url: str, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """The fault: each worker thread got its own empty database (``no such table``), and
    closing printed ``ProgrammingError: SQLite objects created in a thread ...``."""
    with caplog.at_level(logging.DEBUG):
        db = rnb.connect(url, workers=2)
        try:
            db.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT)")
            db.execute("INSERT INTO note (id, body) VALUES (1, 'first')")
            live = define(db).live()  # no direct call before: the workers run it first
            wait_for(live, lambda df: list(df["body"]) == ["first"])
            assert live.status == "fresh", live.error
            db.execute("INSERT INTO note (id, body) VALUES (2, 'second')")
            wait_for(live, lambda df: list(df["body"]) == ["first", "second"])
        finally:
            db.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    out, err = capfd.readouterr()
    assert "Traceback" not in err and "ProgrammingError" not in err, err
    assert "Traceback" not in out


def test_one_threads_transaction_is_not_rolled_back_by_another_threads_read() -> None:
    """Sharing one connection must not share transactions: a read on another thread while
    a write transaction is open must neither see it nor end it (returning a connection to
    the pool rolls it back, which would silently drop the writer's insert)."""
    with rnb.connect("sqlite://", workers=0) as db:
        db.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT)")
        inside, read = threading.Event(), threading.Event()
        seen: list[int] = []

        def reader() -> None:
            assert inside.wait(10)
            seen.append(int(db.read_sql("SELECT COUNT(*) AS n FROM note")["n"].iloc[0]))
            read.set()

        thread = threading.Thread(target=reader)
        thread.start()
        with db.engine.begin() as conn:
            from sqlalchemy import text

            conn.execute(text("INSERT INTO note (id, body) VALUES (1, 'kept')"))
            inside.set()
            # The reader waits for this transaction to end (a bounded wait: it must not
            # get in, so the event stays unset and the wait simply runs out).
            read.wait(1.0)
        thread.join(10)
        assert seen == [1]  # it read after the commit, not inside the transaction
        assert list(db.read_sql("SELECT body FROM note")["body"]) == ["kept"]
