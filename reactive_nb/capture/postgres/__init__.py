"""PostgreSQL external capture: ``sql`` (trigger DDL, NOTIFY payloads), ``triggers``
(install, uninstall) and ``listener``.

Imported lazily by the capture sources (psycopg and SQLAlchemy at top level are fine here).
"""

from __future__ import annotations

from reactive_nb.capture.postgres.listener import (
    APPLICATION_NAME,
    THREAD_NAME,
    PostgresListener,
    conninfo_from_url,
    parse_payload,
)
from reactive_nb.capture.postgres.sql import (
    CHANNEL,
    EVERY_TABLE,
    SCHEMA,
    TRIGGER_VERSION,
    split_table,
    table_name,
)
from reactive_nb.capture.postgres.triggers import (
    install_triggers,
    installed_tables,
    installed_version,
    uninstall_triggers,
)

__all__ = [
    "APPLICATION_NAME", "CHANNEL", "EVERY_TABLE", "SCHEMA", "THREAD_NAME", "TRIGGER_VERSION",
    "PostgresListener", "conninfo_from_url", "install_triggers", "installed_tables",
    "installed_version", "parse_payload", "split_table", "table_name", "uninstall_triggers",
]
