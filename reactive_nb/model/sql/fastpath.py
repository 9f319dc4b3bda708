"""Written tables only: a fast path for capture, with :func:`analyze` as the fallback.

Statements with inlined literals are all distinct, so each would cost a sqlglot parse;
most of them are a single ``SELECT`` or a single-table ``INSERT/UPDATE/DELETE``, which a
regular expression recognises.
"""

from __future__ import annotations

import functools
import re

from reactive_nb.model.sql.lexing import NAME
from reactive_nb.model.sql.statements import analyze

__all__ = ["written_tables"]

_LEAD = r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*"
_SIMPLE_SELECT = re.compile(rf"\A{_LEAD}SELECT\b", re.IGNORECASE | re.DOTALL)
_INTO = re.compile(r"\bINTO\b", re.IGNORECASE)
_SIMPLE_WRITE = re.compile(
    rf"""\A{_LEAD}(?:
        (?:INSERT(?:\s+OR\s+\w+)?|REPLACE)\s+INTO\s+(?P<insert>{NAME})\s*(?:\(|VALUES\b|SELECT\b|DEFAULT\b)
      | UPDATE(?:\s+ONLY)?\s+(?P<update>{NAME})(?:\s+(?:AS\s+)?(?!SET\b)[\w$]+)?\s+SET\b
      | DELETE\s+FROM(?:\s+ONLY)?\s+(?P<delete>{NAME})
        (?:\s+(?:AS\s+)?(?!WHERE\b|USING\b|RETURNING\b)[\w$]+)?
        (?:\s+(?:WHERE|USING|RETURNING)\b|\s*\Z)
    )""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
_PART = re.compile(r"""`((?:[^`]|``)*)`|"((?:[^"]|"")*)"|([\w$]+)""")


def _plain_name(name: str) -> str:
    """``"Sales"."Order"`` -> ``sales.order`` (schema kept, catalog dropped), as analyze."""
    parts = [(b or q or w).replace('""', '"').replace("``", "`").lower()
             for b, q, w in _PART.findall(name)]
    return ".".join(parts[-2:])


@functools.lru_cache(maxsize=4096)
def written_tables(sql: str, dialect: str | None = None) -> tuple[frozenset[str], bool]:
    """``(tables written, ok)`` of ``sql``: what capture needs, faster than ``analyze``.

    Statements with inlined literals are all distinct, so each would cost a sqlglot parse
    (milliseconds); a single ``SELECT`` without ``INTO`` writes nothing, and a single
    ``INSERT/UPDATE/DELETE`` of one named table writes just that table, which a regular
    expression tells. Anything else (several statements, CTEs, DDL, MySQL multi-table
    forms) goes to :func:`analyze`.
    """
    body = sql.rstrip().rstrip(";")
    if ";" not in body:
        if _SIMPLE_SELECT.match(body) and not _INTO.search(body):
            return frozenset(), True
        match = _SIMPLE_WRITE.match(body)
        if match is not None:
            name = match.group("insert") or match.group("update") or match.group("delete")
            return frozenset({_plain_name(name)}), True
    result = analyze(sql, dialect)
    return result.writes, result.ok
