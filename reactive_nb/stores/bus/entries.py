"""The Redis layout of the bus: one stream per tenant, and the fields of one entry.

The stream of tenant ``acme`` is ``rnb:{acme}:changes`` (``<prefix>:{<tenant>}``:
the braces are a Redis Cluster hash tag, so one tenant's keys share a slot). An entry has
the fields ``tables`` (comma-separated table names, ``*`` for "every table"), ``origin``
(who captured the write) and, optionally, ``id`` (default: the stream entry id). Any
program can publish a change with two commands, the version counter first so that a
reader that hears the change also sees the new version::

    HINCRBY rnb:{acme}:versions agent 1
    XADD rnb:{acme}:changes MAXLEN ~ 10000 * tables agent origin cron
"""

from __future__ import annotations

import logging
from typing import Any

from reactive_nb.events import ALL_TABLES, Change
from reactive_nb.stores.bus.cursor import as_text

__all__ = ["entry_fields", "parse_entry", "stream_key"]

# The package's logger (tests and users filter on it), not this module's name.
logger = logging.getLogger("reactive_nb.stores.bus")

_UNKNOWN_ORIGIN = "unknown"  # origin of an entry written without one


def stream_key(prefix: str, tenant: str) -> str:
    """The key of ``tenant``'s change stream."""
    return f"{prefix}:{{{tenant}}}:changes"


def entry_fields(change: Change) -> dict[str, str]:
    """The fields of the stream entry that publishes ``change``."""
    tables = sorted(change.tables)
    if any("," in table for table in tables):
        logger.warning("a table name contains ',': publishing %r as every table", tables)
        tables = [ALL_TABLES]
    return {"tables": ",".join(tables), "origin": change.origin, "id": change.id}


def parse_entry(prefix: str, tenant: str, entry_id: Any, fields: Any) -> Change | None:
    """The change of one entry of ``tenant``'s stream (bytes replies), or None (logged)
    when it is malformed."""
    try:
        if not isinstance(fields, dict):
            raise ValueError("no fields")
        raw = fields.get(b"tables")
        if raw is None:
            raise ValueError("no 'tables' field")
        tables = frozenset(t.strip() for t in raw.decode().split(",") if t.strip())
        if not tables:
            raise ValueError("empty 'tables' field")
        origin = fields.get(b"origin", b"").decode() or _UNKNOWN_ORIGIN
        change_id = fields.get(b"id", b"").decode() or as_text(entry_id)
    except ValueError as exc:  # UnicodeDecodeError is one
        logger.warning("skipping malformed change %s in %s: %s (fields %.200r)",
                       as_text(entry_id), stream_key(prefix, tenant), exc, fields)
        return None
    return Change(tenant, tables, origin, change_id)
