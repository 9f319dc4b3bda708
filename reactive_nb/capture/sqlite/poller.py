"""The SQLite poller: reports tables written by other connections, from their counters."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import urllib.parse
import uuid
from collections.abc import Callable

from reactive_nb.capture.external import ExternalChange
from reactive_nb.capture.sqlite.triggers import CHANGES_TABLE, EVERY_TABLE
from reactive_nb.errors import ClosedError
from reactive_nb.threads import Background

__all__ = ["THREAD_NAME", "SqlitePoller"]

# The package's logger, as before the package was split into modules.
logger = logging.getLogger("reactive_nb.capture.sqlite")

THREAD_NAME = "reactive_nb-sqlite-poller"
#: Seconds close() waits for the thread to end before warning.
_JOIN_TIMEOUT = 5.0

# The schema as a poller compares it: everything but reactive_nb's triggers and change
# table (installing them is no DDL anyone reads) and SQLite's own statistics tables.
_SCHEMA_SQL = ("SELECT type, name, tbl_name, sql FROM sqlite_master "
               "WHERE name NOT LIKE '\\_reactive\\_nb\\_%' ESCAPE '\\' "
               "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name")


class SqlitePoller:
    """Reports tables written by other connections to ``on_change``.

    A daemon thread (``reactive_nb-sqlite-poller``) with its own read-only sqlite3
    connection reads ``PRAGMA data_version`` every ``interval`` seconds. That value
    changes only when *another* connection commits to the file (any process, this one
    included: the poller's connection never writes), and reading it costs no I/O
    beyond a lock check, so an idle poller is nearly free. When it changes, the poller
    reads ``_reactive_nb_changes`` and emits one ``ExternalChange`` with the tables
    whose counter moved (``tenants`` None, ``txid`` a fresh uuid). A commit that changed
    the schema (``PRAGMA schema_version`` moved and ``sqlite_master`` differs, reactive_nb's
    own triggers aside) adds ``"*"``: DDL may change what any result reads. Commits
    that did neither (writes to untriggered tables) emit nothing. Before triggers are
    installed the change table does not exist and the poller just keeps looking.
    ``start``/``close`` are meant to be called by the owner's thread. Tests drive it step
    by step: a long ``interval`` keeps the thread waiting while they call :meth:`poll`.
    """

    def __init__(
        self, path: str, on_change: Callable[[ExternalChange], None], interval: float = 0.02
    ) -> None:
        if not path or path == ":memory:" or path.startswith("file::memory:"):
            raise ValueError("an in-memory SQLite database cannot be watched by a poller")
        self._path = os.path.abspath(path)
        self._on_change = on_change
        self._interval = interval
        self._thread: Background | None = None  # made by start(), once the baseline is read
        self._closed = False
        # Owned by the poller thread once it runs (start() fills them before that).
        self._conn: sqlite3.Connection | None = None
        self._data_version = -1
        self._schema_version = -1
        self._schema: list[tuple[object, ...]] = []
        self._versions: dict[str, int] = {}
        # Counters this process's own commits produced (already published locally);
        # _expected_lock guards the dict, written by committing threads, read by the poller.
        self._expected: dict[str, int] = {}
        self._expected_lock = threading.Lock()

    def expect(self, counters: dict[str, int]) -> None:
        """This process committed and published these counters: do not report them again."""
        with self._expected_lock:
            for table, version in counters.items():
                if version > self._expected.get(table, -1):
                    self._expected[table] = version

    def start(self) -> None:
        """Open the connection, read the baseline, start the thread. A commit made
        after this returns is reported. Errors opening the file are raised here."""
        if self._closed:
            raise ClosedError("this SqlitePoller was closed")
        if self._thread is not None:
            return
        uri = "file:" + urllib.parse.quote(self._path) + "?mode=ro"
        # isolation_level=None: no read transaction stays open between two polls,
        # otherwise the snapshot (and data_version) would never move.
        conn = sqlite3.connect(uri, uri=True, isolation_level=None,
                               check_same_thread=False, timeout=0.5)
        try:
            self._data_version = self._read_data_version(conn)
            self._schema_version = self._read_schema_version(conn)
            self._schema = self._read_schema(conn)
            self._versions = self._read_versions(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._thread = Background(THREAD_NAME, self._run)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (it wakes at once); the thread closes its connection.
        Idempotent; from ``on_change`` it only asks the loop to end, which it does on
        its own."""
        self._closed = True
        if self._thread is not None:
            self._thread.stop(_JOIN_TIMEOUT)

    @property
    def connection(self) -> sqlite3.Connection | None:
        """The poller's read-only connection: None before ``start()`` and once the thread
        has ended. The thread owns it: use it only while the loop waits between polls."""
        return self._conn

    def poll(self) -> None:
        """One poll in the calling thread, as the thread does every ``interval``: report
        what other connections committed since the last poll. An error (a writer holding
        the file locked) changes nothing, so the next poll still sees that commit. Tests
        call it while the thread waits out a long ``interval`` (it owns the connection)."""
        conn = self._conn
        if conn is None:
            raise ClosedError("this SqlitePoller is not running")
        data_version = self._read_data_version(conn)
        if data_version == self._data_version:
            return
        schema_version = self._read_schema_version(conn)
        schema = self._schema
        if schema_version != self._schema_version:
            schema = self._read_schema(conn)
        versions = self._read_versions(conn)
        # Only now that every read succeeded (a writer's lock can fail one): a failed
        # poll is retried at the next tick instead of losing this commit.
        self._data_version, self._schema_version = data_version, schema_version
        ddl, self._schema = schema != self._schema, schema
        with self._expected_lock:
            expected = self._expected
            self._expected = {t: v for t, v in expected.items() if versions.get(t, -1) < v}
        moved = frozenset(t for t, v in versions.items()
                          if self._versions.get(t) != v and expected.get(t) != v)
        self._versions = versions
        if ddl:
            moved |= {EVERY_TABLE}
        if moved:
            change = ExternalChange(moved, None, uuid.uuid4().hex)
            try:
                self._on_change(change)
            except Exception:
                logger.exception("on_change failed for %r", change)

    @staticmethod
    def _read_data_version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    @staticmethod
    def _read_schema_version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA schema_version").fetchone()[0])

    @staticmethod
    def _read_schema(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
        return [tuple(row) for row in conn.execute(_SCHEMA_SQL)]

    @staticmethod
    def _read_versions(conn: sqlite3.Connection) -> dict[str, int]:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            (CHANGES_TABLE,)).fetchone()
        if exists is None:
            return {}
        rows = conn.execute(f"SELECT tbl, version FROM {CHANGES_TABLE}").fetchall()
        # Triggers of older installs counted under the table's own spelling ("MixedCase"):
        # summed with the canonical row, a move of either still shows.
        versions: dict[str, int] = {}
        for tbl, version in rows:
            key = str(tbl).lower()
            versions[key] = versions.get(key, 0) + int(version)
        return versions

    def _run(self, stop: threading.Event) -> None:
        conn = self._conn
        assert conn is not None
        failing = False
        try:
            while not stop.wait(self._interval):
                try:
                    self.poll()
                    failing = False
                except sqlite3.Error as exc:
                    # A writer's commit can hold the file locked for a moment
                    # (rollback-journal mode): retried at the next tick.
                    transient = "locked" in str(exc) or "busy" in str(exc)
                    if failing or transient:
                        logger.debug("SQLite poller: %s", exc)
                    else:
                        logger.warning("SQLite poller cannot read %s: %s", self._path, exc)
                    failing = not transient
        finally:
            self._conn = None
            conn.close()
