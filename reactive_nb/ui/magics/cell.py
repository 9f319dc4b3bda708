"""``%%reactive NAME``: a reactive function from the SQL of a cell, and its live query
bound to the variable NAME, after every check that keeps the notebook's variables safe."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from reactive_nb.errors import one_line
from reactive_nb.ui.magics.parameters import prepare, sql_handler
from reactive_nb.ui.magics.state import DB_VARIABLE, MagicsState

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

#: A jupysql / Jinja ``{{var}}`` template placeholder.
_TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
#: IPython's history variables: _, __, ___, _i, _ii, _iii, _5, _i5.
_IPYTHON_HISTORY = re.compile(r"_{1,3}|_i{1,3}|_i?\d+")


def define(state: MagicsState, args: Any, sql: str,
           table_options: Callable[[], dict[str, int | None]]) -> None:
    """Define the function ``args.name`` from ``sql``, run it once, bind its live query
    and show its table (unless ``--no-display``). ``table_options`` are the settings,
    read only once the cell itself is known to be sound."""
    name: str = args.name
    where = f"%%reactive {name}"
    shell = state.shell
    _check_name(name, where, shell)
    if not sql.strip():
        raise UsageError(f"{where}: the cell has no SQL")
    template = _TEMPLATE.search(sql)
    if template is not None:
        var = template.group(1) if template.group(1).isidentifier() else "name"
        raise UsageError(f"{where}: {template.group(0)} is not substituted; write :{var} "
                         f"instead (a bound parameter read from the variable {var})")
    options = table_options()
    db = state.require_db()
    from reactive_nb.db import ReactiveDB
    from reactive_nb.model.sql import sqlglot_dialect

    ns = shell.user_ns
    if isinstance(ns.get(name), ReactiveDB):
        raise UsageError(f"{where}: NAME {name!r} would overwrite the connection held by "
                         f"the variable {name}; choose another name")
    sql, params = prepare(sql, where, sqlglot_dialect(db.engine.dialect.name))
    if name in params:
        raise UsageError(f"{where}: NAME {name!r} would overwrite the variable of the "
                         f"parameter :{name}; choose another name")
    missing = [p for p in params if p not in ns]
    if missing:
        listed = ", ".join(f":{p}" for p in missing)
        plural = "s" if len(missing) > 1 else ""
        raise UsageError(f"{where}: no variable for parameter{plural} {listed}; "
                         f"define {' and '.join(missing)} first")
    inputs = {p: ns[p] for p in params}
    deps = [d.strip() for d in args.deps.split(",") if d.strip()] if args.deps else None

    from sqlalchemy.exc import SQLAlchemyError

    from reactive_nb.errors import ReactiveError
    from reactive_nb.model.tenants import current_tenant

    try:
        fn = db.reactive(name=name, dependencies=deps, ttl=args.ttl,
                         priority=args.priority)(
            sql_handler(db, sql, params))
        values = fn.validate(**inputs)
        key = fn.key_for(values)
        tenant = db.check_tenant(current_tenant())
        # Run once here: a SQL error shows in this cell, the dependencies are learned
        # now, and the live query starts from this (cached, fresh) result.
        columns = list(fn.fetch(tenant, values, key=key, force=True).df.columns)
    except (SQLAlchemyError, ReactiveError, ValueError, TypeError) as exc:
        raise UsageError(f"{where}: {one_line(exc)}") from None
    primary_key = tuple(c.strip() for c in (args.key or "").split(",") if c.strip())
    unknown = [c for c in primary_key if c not in columns]
    if unknown:
        raise UsageError(f"{where}: --key {unknown[0]!r} is not a column of the result "
                         f"({', '.join(map(str, columns))})")
    live = fn.live(values, priority=args.priority, tenant=tenant,
                   primary_key=primary_key or None)
    previous = state.lives.get(name)
    state.lives[name] = live
    ns[name] = live
    if previous is not None and previous is not live:
        previous.close()
    if not args.no_display:
        from IPython.display import display

        table = live.widget()  # new with this live query: the settings apply
        table.configure(**options)
        display(table)  # type: ignore[no-untyped-call]


def _check_name(name: str, where: str, shell: InteractiveShell) -> None:
    """Refuse a NAME whose variable the cell must not overwrite: the connection, a Python
    keyword or builtin, or one of IPython's own variables."""
    import builtins
    import keyword

    if not name.isidentifier():
        raise UsageError(f"{where}: NAME must be a Python identifier (it names a variable)")
    if name == DB_VARIABLE:
        reason = f"would overwrite the connection ({DB_VARIABLE})"
    elif keyword.iskeyword(name):
        reason = "is a Python keyword"
    elif name in shell.user_ns_hidden or _IPYTHON_HISTORY.fullmatch(name):
        reason = "would overwrite IPython's own variable"  # get_ipython is a builtin too
    elif hasattr(builtins, name):
        reason = "would shadow a Python builtin"
    else:
        return
    raise UsageError(f"{where}: NAME {name!r} {reason}; choose another name")
