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

The modules: ``triggers`` (install, uninstall, list; the naming rules) and ``poller``.
"""

from __future__ import annotations

from reactive_nb.capture.sqlite.poller import THREAD_NAME, SqlitePoller
from reactive_nb.capture.sqlite.triggers import (
    CHANGES_TABLE,
    EVERY_TABLE,
    TRIGGER_PREFIX,
    install_triggers,
    installed_tables,
    trigger_name,
    uninstall_triggers,
)

__all__ = [
    "CHANGES_TABLE", "EVERY_TABLE", "THREAD_NAME", "TRIGGER_PREFIX", "SqlitePoller",
    "install_triggers", "installed_tables", "trigger_name", "uninstall_triggers",
]
