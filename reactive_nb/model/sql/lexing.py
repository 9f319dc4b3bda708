"""Lexing SQL without parsing it: statements, placeholders and first keywords.

Statements are split on ``;`` outside strings, quoted identifiers, dollar quotes and
comments, and placeholders sqlglot rejects in some dialects are rewritten to ``:p``
(see the rules in :mod:`reactive_nb.model.sql.statements`). A statement's first keyword
decides, before any parsing, whether it is transaction control or allow-listed (never
parsed), an ``EXPLAIN`` (its inner statement is analysed) or a MySQL ``RENAME TABLE``.
"""

from __future__ import annotations

import re

__all__ = [
    "NAME",
    "RENAME_PAIR",
    "RENAME_TABLE",
    "TRANSACTION_ONLY",
    "explained",
    "first_word",
    "scanner",
    "skips_parsing",
    "split_statements",
]

# --- splitting and normalising -----------------------------------------------------

#: Whole strings that are only transaction control: answered without any parsing.
TRANSACTION_ONLY = re.compile(
    r"\s*(?:BEGIN|COMMIT|END|ROLLBACK|ABORT|START\s+TRANSACTION|SAVEPOINT|RELEASE)\b"
    r"[^;'\"`$/#-]*;?\s*\Z",
    re.IGNORECASE,
)

_PLACEHOLDER_AND_SEMICOLON = r"""
  | (?P<param> %\(\w+\)s | %s(?!\w) | \?\d+ | (?<![\w\]:]):\d+ | __\[POSTCOMPILE_\w+\] )
  | (?P<percent> %% )
  | (?P<semi> ; )
"""

#: Standard SQL lexing (PostgreSQL, SQLite, generic): '' escapes only, E'' strings with
#: backslashes, dollar quoting.
_SCAN_STANDARD = re.compile(
    r"""
    (?P<skip>
        (?<!\w)[eE]'(?:[^'\\]|\\.|'')*'
      | '(?:[^']|'')*'
      | "(?:[^"]|"")*"
      | `(?:[^`]|``)*`
      | (?<![\w$])\$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$
    )
  | (?P<comment> --[^\n]* | /\*.*?\*/ )
    """
    + _PLACEHOLDER_AND_SEMICOLON,
    re.VERBOSE | re.DOTALL,
)

#: MySQL lexing: backslash escapes in both quote styles, # comments, no dollar quoting.
_SCAN_MYSQL = re.compile(
    r"""
    (?P<skip>
        '(?:[^'\\]|\\.|'')*'
      | "(?:[^"\\]|\\.|"")*"
      | `(?:[^`]|``)*`
    )
  | (?P<comment> --[^\n]* | \#[^\n]* | /\*.*?\*/ )
    """
    + _PLACEHOLDER_AND_SEMICOLON,
    re.VERBOSE | re.DOTALL,
)


def split_statements(sql: str, lexer: re.Pattern[str]) -> list[str]:
    """Split on top-level ``;``, drop comments, normalise placeholders to ``:p``."""
    statements: list[str] = []
    parts: list[str] = []
    pos = 0
    for match in lexer.finditer(sql):
        parts.append(sql[pos : match.start()])
        pos = match.end()
        if match.group("skip") is not None:
            parts.append(match.group())
        elif match.group("comment") is not None:
            parts.append(" ")
        elif match.group("param") is not None:
            parts.append(":p")
        elif match.group("percent") is not None:
            parts.append("%")
        else:  # semicolon
            statements.append("".join(parts).strip())
            parts = []
    parts.append(sql[pos:])
    statements.append("".join(parts).strip())
    return [s for s in statements if s]


def scanner(mysql: bool) -> re.Pattern[str]:
    """The ``lexer`` of :func:`split_statements` for MySQL or for every other dialect."""
    return _SCAN_MYSQL if mysql else _SCAN_STANDARD


# --- first-word classification -----------------------------------------------------

_FIRST_WORD = re.compile(r"[A-Za-z_]+")

_TRANSACTION_WORDS = frozenset(
    {"BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE"}
)
_HARMLESS_WORDS = frozenset(
    {
        "SET",
        "SHOW",
        "PRAGMA",
        "LISTEN",
        "NOTIFY",
        "UNLISTEN",
        "VACUUM",
        "ANALYZE",
        "ANALYSE",
        "DISCARD",
        "RESET",
    }
)

_EXPLAIN_PREFIX = re.compile(
    r"""EXPLAIN\b
        (?:\s+QUERY\s+PLAN\b)?
        (?:\s*\((?:[^()]|\([^()]*\))*\))?
        (?:\s+(?:ANALY[SZ]E|VERBOSE|EXTENDED|PARTITIONS|FORMAT\s*=\s*\w+)\b)*
        \s*""",
    re.IGNORECASE | re.VERBOSE,
)

_IDENT = r"""(?:`(?:[^`]|``)*`|"(?:[^"]|"")*"|[\w$]+)"""
NAME = rf"{_IDENT}(?:\s*\.\s*{_IDENT})*"
RENAME_TABLE = re.compile(r"RENAME\s+TABLES?\s+", re.IGNORECASE)
RENAME_PAIR = re.compile(rf"(?P<old>{NAME})\s+TO\s+(?P<new>{NAME})\s*(?:,\s*|\Z)", re.IGNORECASE)


def first_word(statement: str) -> str:
    """The statement's first keyword, upper-cased ('' when it starts with none)."""
    word_match = _FIRST_WORD.match(statement)
    return word_match.group().upper() if word_match else ""


def skips_parsing(word: str, statement: str) -> bool:
    """Whether a statement starting with ``word`` is transaction control or allow-listed:
    ``ok`` with no tables, without being parsed."""
    if word in _TRANSACTION_WORDS or word in _HARMLESS_WORDS:
        return True
    if word == "START":
        return re.match(r"START\s+TRANSACTION\b", statement, re.IGNORECASE) is not None
    return False


def explained(statement: str) -> str:
    """The statement an ``EXPLAIN [options] stmt`` explains ('' when there is none)."""
    prefix = _EXPLAIN_PREFIX.match(statement)
    return statement[prefix.end() :] if prefix else ""
