"""SQL quoting for the DDL capture installs (trigger bodies cannot take bound parameters)."""

from __future__ import annotations


def ident(name: str) -> str:
    """A double-quoted SQL identifier (PostgreSQL and SQLite)."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A single-quoted SQL string literal."""
    return "'" + value.replace("'", "''") + "'"
