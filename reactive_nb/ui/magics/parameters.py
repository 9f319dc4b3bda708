"""The ``:name`` parameters of a ``%%reactive`` cell's SQL, found by sqlglot's tokenizer,
and the handler that runs the SQL with them bound (never formatted into it)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

if TYPE_CHECKING:
    from reactive_nb.db import ReactiveDB


def parameters(sql: str, where: str, dialect: str | None = None) -> list[str]:
    """The ``:name`` bind parameters of the SQL, in order (see ``prepare``)."""
    return prepare(sql, where, dialect)[1]


def prepare(sql: str, where: str, dialect: str | None = None) -> tuple[str, list[str]]:
    """The SQL to give SQLAlchemy's ``text()``, and its ``:name`` parameters in order.

    sqlglot's tokenizer for the database's ``dialect`` finds the real parameters, so a
    ``':org'`` in a string literal, a quoted identifier or a comment is none, and
    ``:org::text`` is the parameter ``org`` cast to text. ``text()`` itself would take any
    ``:word`` for a parameter, so the SQL it gets has the colons outside code escaped
    (``\\:``, which ``text()`` sends as ``:``) and a space between a parameter and a cast
    (``:org ::text``). A ``\\:`` written in code stays SQLAlchemy's escaped colon.
    """
    from sqlglot import TokenType
    from sqlglot.dialects.dialect import Dialect
    from sqlglot.errors import TokenError

    try:
        tokens = Dialect.get_or_raise(dialect).tokenize(sql)
    except (TokenError, ValueError):  # sqlglot cannot lex it: SQLAlchemy's reading, as is
        from sqlalchemy import text

        return sql, _checked(list(text(sql).compile().params), where)
    code: set[int] = set()  # positions of colons that are SQL operators (:, ::, :=)
    found: dict[int, str] = {}  # position of a parameter's colon -> its name
    for i, token in enumerate(tokens):
        raw = sql[token.start:token.end + 1]
        if token.token_type in (TokenType.PLACEHOLDER, TokenType.PARAMETER):
            if raw.startswith(":") and len(raw) > 1:
                found[token.start] = raw[1:]
            continue
        if "COLON" not in token.token_type.name:
            continue
        code.update(p for p in range(token.start, token.end + 1) if sql[p] == ":")
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        before = sql[token.start - 1] if token.start else " "
        if (token.token_type == TokenType.COLON and after is not None
                and after.start == token.end + 1
                and not (before.isalnum() or before in "_:\\")):  # not a[1:n] nor \:x
            word = sql[after.start:after.end + 1]
            if word[:1].isalnum() or word[:1] == "_":  # :name (or :1, refused below)
                found[token.start] = word
    parts: list[str] = []
    last = 0
    for match in re.finditer(":", sql):
        at = match.start()
        if at in found:
            end = at + 1 + len(found[at])
            if sql[end:end + 1] == ":":  # :org::text -> :org ::text
                parts += [sql[last:end], " "]
                last = end
        elif at not in code:  # in a literal, a quoted identifier or a comment
            parts += [sql[last:at], "\\"]
            last = at
    parts.append(sql[last:])
    return "".join(parts), _checked(list(dict.fromkeys(found.values())), where)


def _checked(names: list[str], where: str) -> list[str]:
    """Parameter names, each usable as a Python variable."""
    import keyword

    bad = [n for n in names if keyword.iskeyword(n) or not n.isidentifier()]
    if bad:
        raise UsageError(f"{where}: parameter :{bad[0]} cannot name a Python variable; rename it")
    return names


def sql_handler(db: ReactiveDB, sql: str, params: list[str]) -> Any:
    """A handler taking exactly the SQL's parameters (keyword-only), running it bound."""
    import inspect

    def handler(**inputs: Any) -> Any:
        return db.read_sql(sql, inputs)

    handler.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY) for p in params])
    return handler
