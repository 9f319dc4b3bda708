"""PostgreSQL external capture: ``triggers`` (DDL, NOTIFY payloads) and ``listener``.

Imported lazily by the capture sources (psycopg and SQLAlchemy at top level are fine here).
"""

from __future__ import annotations

from reactive_nb.capture.postgres.listener import (
    PostgresListener,
    conninfo_from_url,
    parse_payload,
)
from reactive_nb.capture.postgres.triggers import (
    APPLICATION_NAME,
    CHANNEL,
    EVERY_TABLE,
    SCHEMA,
    THREAD_NAME,
    TRIGGER_VERSION,
    install_triggers,
    installed_tables,
    installed_version,
    split_table,
    table_name,
    uninstall_triggers,
)

__all__ = [
    "APPLICATION_NAME", "CHANNEL", "EVERY_TABLE", "SCHEMA", "THREAD_NAME", "TRIGGER_VERSION",
    "PostgresListener", "conninfo_from_url", "install_triggers", "installed_tables",
    "installed_version", "parse_payload", "split_table", "table_name", "uninstall_triggers",
]
