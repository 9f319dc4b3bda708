"""SQLite external capture: row triggers that bump a change table, and a poller.

SQLite has no NOTIFY and no statement-level triggers, so ``install_triggers`` adds
``AFTER INSERT/UPDATE/DELETE ... FOR EACH ROW`` triggers that upsert a per-table
counter in ``_reactive_nb_changes``. Any client writing the file (Python's ``sqlite3``,
the ``sqlite3`` CLI, another app) bumps it inside its own transaction, so the bump is
committed or rolled back with the write. ``SqlitePoller`` watches ``PRAGMA
data_version`` and reports the tables whose counter moved as an ``ExternalChange``.
Nothing can be lost: the counters are persistent, so a poller that looks late still
sees every table that moved. DDL by any connection (``ALTER TABLE``, ``CREATE INDEX``,
``DROP VIEW``) moves ``PRAGMA schema_version`` and is reported as ``"*"``: every table.

Names are canonical: lower-case (SQLite's names are case-insensitive) and bare, since
only tables of the ``main`` database are captured. Views have no writes of their own and
are skipped. Tables of attached databases are skipped too: a trigger there cannot write
``main``'s change table, so their writes are not captured (reactive_nb's own writes to
them still are, by the in-process capture).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Sequence

import sqlalchemy

from reactive_nb.capture.external import ExternalChange
from reactive_nb.capture.quoting import ident as _ident
from reactive_nb.capture.quoting import literal as _literal
from reactive_nb.errors import CaptureError, ClosedError, closest

logger = logging.getLogger(__name__)

CHANGES_TABLE = "_reactive_nb_changes"
TRIGGER_PREFIX = "_reactive_nb_"
THREAD_NAME = "reactive_nb-sqlite-poller"
_OPERATIONS = ("insert", "update", "delete")

# WITHOUT ROWID: the upsert then touches one b-tree instead of index + table
# (about 10% less trigger overhead on bulk inserts, measured).
_CREATE_CHANGES = (f"CREATE TABLE IF NOT EXISTS {CHANGES_TABLE} "
                   "(tbl TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID")


#: ``install_triggers(engine, [EVERY_TABLE])`` installs on every table of the file.
EVERY_TABLE = "*"

# The schema as a poller compares it: everything but reactive_nb's triggers and change
# table (installing them is no DDL anyone reads) and SQLite's own statistics tables.
_SCHEMA_SQL = ("SELECT type, name, tbl_name, sql FROM sqlite_master "
               "WHERE name NOT LIKE '\\_reactive\\_nb\\_%' ESCAPE '\\' "
               "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name")


def trigger_name(table: str, operation: str) -> str:
    """Name of the trigger capturing ``operation`` (insert/update/delete) on ``table``."""
    return f"{TRIGGER_PREFIX}{table.lower()}_{operation}"


def _trigger_sql(table: str, operation: str) -> str:
    """The trigger on ``table`` (its real spelling), which bumps its canonical name."""
    return (
        f"CREATE TRIGGER {_ident(trigger_name(table, operation))} "
        f"AFTER {operation.upper()} ON {_ident(table)} FOR EACH ROW BEGIN "
        f"INSERT INTO {CHANGES_TABLE} (tbl, version) VALUES ({_literal(table.lower())}, 1) "
        "ON CONFLICT (tbl) DO UPDATE SET version = version + 1; END"
    )


def _split(table: str) -> tuple[str | None, str]:
    """``'main."MixedCase"'`` -> ``("main", "MixedCase")``; quotes and blanks dropped."""
    parts = [part.strip().strip('"') for part in table.split(".", 1)]
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def _resolve(cur: sqlite3.Cursor, table: str, known: dict[str, tuple[str, str]]) -> str | None:
    """The catalog's spelling of ``table`` (SQLite names are case-insensitive), or None
    for what is skipped: a view, or a table of an attached database."""
    schema, name = _split(table)
    if schema is not None and schema.lower() != "main":
        attached = {str(row[1]).lower() for row in cur.execute("PRAGMA database_list")}
        if schema.lower() in attached:
            found = cur.execute(f"SELECT 1 FROM {_ident(schema)}.sqlite_master WHERE "
                                "type IN ('table', 'view') AND name = ? COLLATE NOCASE",
                                (name,)).fetchone()
            if found is not None:
                logger.info("%s is in an attached database: its writes by other clients "
                            "are not captured", table)
                return None
        raise CaptureError(table, f"no such table: {table}")
    entry = known.get(name.lower())
    if entry is None:
        suggestion = closest(name, [real for real, _ in known.values()])
        hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
        raise CaptureError(table, f"no such table: {table}{hint}")
    real, kind = entry
    if kind != "table":
        return None  # a view: its writes land in its base tables
    if real.lower() == CHANGES_TABLE or real.lower().startswith("sqlite_"):
        raise CaptureError(table, "reactive_nb's and SQLite's own tables cannot be captured")
    return real


_TRIGGERS_SQL = "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'"


def _ours(rows: Iterable[Sequence[object]]) -> list[tuple[str, str]]:
    """(trigger name, table) of the triggers install_triggers created, from _TRIGGERS_SQL."""
    return [(str(name), str(tbl)) for name, tbl, body in rows
            if str(name).startswith(TRIGGER_PREFIX) and CHANGES_TABLE in str(body or "")]


def _run_ddl(engine: sqlalchemy.Engine, work: Callable[[sqlite3.Cursor], None],
             table: Callable[[], str]) -> None:
    """Run ``work`` in one transaction on a raw sqlite3 connection of ``engine``.

    pysqlite only opens transactions before DML, so the BEGIN is explicit to make the
    DDL atomic. ``table()`` names the table an error is reported against.
    """
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        if not isinstance(conn, sqlite3.Connection):
            raise TypeError(f"expected a sqlite3 connection, got {type(conn).__name__}")
        cur = conn.cursor()
        try:
            if not conn.in_transaction:
                cur.execute("BEGIN IMMEDIATE")
            work(cur)
            conn.commit()
        except sqlite3.Error as exc:
            conn.rollback()
            raise CaptureError(table(), str(exc)) from exc
        except BaseException:
            conn.rollback()
            raise
        finally:
            cur.close()
    finally:
        raw.close()


def install_triggers(engine: sqlalchemy.Engine, tables: Iterable[str]) -> list[str]:
    """Install change-capture triggers on ``tables``; return their canonical names.

    ``"*"`` means every table of the file. Views and tables of attached databases are
    skipped and left out of the result. Idempotent and atomic (one transaction). Creates
    ``_reactive_nb_changes`` when missing. Tables not named are never touched. Raises
    ``CaptureError`` naming the table when it does not exist or SQLite refuses
    (read-only file, lock).
    """
    wanted = list(dict.fromkeys(tables))
    if not wanted:
        return []
    installed: list[str] = []
    current = [wanted[0]]

    def work(cur: sqlite3.Cursor) -> None:
        rows = cur.execute(
            "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view')").fetchall()
        known = {str(name).lower(): (str(name), str(kind)) for name, kind in rows}
        names: list[str] = []
        for table in wanted:
            if table.strip() == EVERY_TABLE:
                names += sorted(name for name, (_, kind) in known.items()
                                if kind == "table"
                                and not name.startswith(("sqlite_", CHANGES_TABLE)))
            else:
                names.append(table)
        resolved: dict[str, str] = {}  # canonical -> real name
        for table in names:
            current[0] = table
            real = _resolve(cur, table, known)
            if real is not None:
                resolved.setdefault(real.lower(), real)
        if not resolved:
            return
        cur.execute(_CREATE_CHANGES)
        for table, real in resolved.items():
            current[0] = table
            for operation in _OPERATIONS:
                cur.execute(f"DROP TRIGGER IF EXISTS {_ident(trigger_name(table, operation))}")
                cur.execute(_trigger_sql(real, operation))
            installed.append(table)

    _run_ddl(engine, work, lambda: current[0])
    return installed


def uninstall_triggers(engine: sqlalchemy.Engine) -> None:
    """Remove every reactive_nb trigger and the change table: the file is as before."""
    current = [CHANGES_TABLE]

    def work(cur: sqlite3.Cursor) -> None:
        for name, table in _ours(cur.execute(_TRIGGERS_SQL).fetchall()):
            current[0] = table
            cur.execute(f"DROP TRIGGER IF EXISTS {_ident(name)}")
        current[0] = CHANGES_TABLE
        cur.execute(f"DROP TABLE IF EXISTS {CHANGES_TABLE}")

    _run_ddl(engine, work, lambda: current[0])


def installed_tables(engine: sqlalchemy.Engine) -> list[str]:
    """Tables that have reactive_nb triggers, canonically named, sorted."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(_TRIGGERS_SQL).all()
    return sorted({table.lower() for _, table in _ours(rows)})


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
    ``start``/``close`` are meant to be called by the owner's thread.
    """

    def __init__(
        self, path: str, on_change: Callable[[ExternalChange], None], interval: float = 0.02
    ) -> None:
        if not path or path == ":memory:" or path.startswith("file::memory:"):
            raise ValueError("an in-memory SQLite database cannot be watched by a poller")
        self._path = os.path.abspath(path)
        self._on_change = on_change
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
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
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (it wakes at once) and close its connection."""
        self._closed = True
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is threading.current_thread():
            return  # close() called from on_change: the loop ends on its own
        if thread is not None:
            thread.join(timeout=5.0)
            if thread.is_alive():
                logger.warning("the SQLite poller thread did not stop in time")
        elif self._conn is not None:
            self._conn.close()
            self._conn = None

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

    def _poll(self, conn: sqlite3.Connection) -> None:
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

    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        failing = False
        try:
            while not self._stop.wait(self._interval):
                try:
                    self._poll(conn)
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
        except BaseException:
            logger.exception("SQLite poller thread died")
            raise
        finally:
            self._conn = None
            conn.close()
