"""IPython magics: ``%load_ext reactive_nb``, ``%reactive ...`` and ``%%reactive NAME``.

An analyst writes SQL in a cell and gets a live table bound to a variable. The SQL's
``:name`` parameters are read from the notebook's variables and always sent as bound
parameters, never formatted into the SQL. The extension's state (the connection and the
live queries it made) lives on the shell object, so ``%reload_ext`` finds and closes it;
``%unload_ext`` stops every thread the extension started.

Loading stays light: SQLAlchemy, pandas and widgets are imported inside the magics.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from IPython.core import magic_arguments as _margs
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Int

from reactive_nb.errors import one_line
from reactive_nb.events import DEFAULT_TENANT

if TYPE_CHECKING:
    import pandas as pd
    from IPython.core.interactiveshell import InteractiveShell

    from reactive_nb.db import ReactiveDB
    from reactive_nb.live.functions import ReactiveFunction
    from reactive_nb.live.query import LiveQuery

_F = TypeVar("_F", bound=Callable[..., Any])


def _magic_arguments(name: str) -> Callable[[_F], _F]:
    """IPython's ``magic_arguments`` (untyped), typed: builds the parser and the help."""
    return _margs.magic_arguments(name)  # type: ignore[no-untyped-call]


def _argument(*args: Any, **kwargs: Any) -> Callable[[_F], _F]:
    """IPython's ``argument`` (untyped), typed."""
    return _margs.argument(*args, **kwargs)  # type: ignore[no-untyped-call]


#: Attribute of the shell holding the extension's state.
STATE_ATTR = "_reactive_nb_state"
#: Variable of the user namespace bound to the connected ReactiveDB.
DB_VARIABLE = "rnb_db"

USAGE = """\
reactive_nb magics

%reactive connect [URL] [--redis URL] [--relations FILE.yaml|FILE.json]
                  [--min-interval S] [--workers N]
    Connect to a database. URL defaults to $REACTIVE_NB_URL and --redis to
    $REACTIVE_NB_REDIS, so a notebook need not carry credentials. The ReactiveDB is
    bound to the variable `rnb_db` (and returned: `db = %reactive connect`).
    Connecting again closes the previous connection and its live queries.

%%reactive NAME [--deps a,b] [--priority high|normal|low] [--ttl S] [--key COLS]
                [--no-display]
SELECT ... WHERE organization_id = :org
    Define the reactive function NAME from the SQL of the cell and bind its live query
    to the variable NAME. Each :param is read from the variable of the same name and
    sent as a bound parameter. --deps lists the tables it depends on (default: the
    tables it reads); --key names primary-key columns (to highlight changed rows).
    Running the cell again replaces (closes) the previous live query.
    A ':name' inside a string literal, a quoted identifier or a comment is not a
    parameter; a cast may follow one (:id::int). NAME may not be rnb_db, a Python
    keyword or builtin, or one of the cell's parameters.

%reactive status                  a table of the live queries
%reactive tenant NAME | --none    run the notebook as tenant NAME (or unscoped) from now on
%reactive tenants                 the tenants this user may open
%reactive refresh [NAME|--all]    re-run one live query (or all) now
%reactive priorities A B ...      refresh these functions first, in this order
%reactive close                   close every live query and the connection
%reactive --help                  this text

Settings (%config ReactiveMagics.page_size = 100; apply to tables created afterwards):
    ReactiveMagics.page_size   rows per page of the live table (default 50)
    ReactiveMagics.height      height of the live table in pixels (default 0: up to 15 rows)
"""

#: A first word of ``%reactive`` that starts SQL: the SQL belongs in a ``%%reactive`` cell.
_SQL_WORDS = frozenset({"select", "with", "insert", "update", "delete", "values", "table",
                        "create", "drop", "alter", "explain", "show", "pragma"})
#: A jupysql / Jinja ``{{var}}`` template placeholder.
_TEMPLATE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as a one-line UsageError instead of exiting."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog=prog, add_help=False, allow_abbrev=False)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see %reactive --help)")


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%reactive: cannot parse {line!r}: {exc}") from None


class _State:
    """What the extension opened in one shell: the connection and the magic's live queries."""

    def __init__(self, shell: InteractiveShell) -> None:
        self.shell = shell
        self.db: ReactiveDB | None = None
        self.lives: dict[str, LiveQuery] = {}
        #: The tenant chosen by ``%reactive tenant`` (None: never chosen). Re-applied
        #: before every cell: a ContextVar set in a cell that awaits (IPython runs it as
        #: an asyncio task, in a copy of the context) would not reach the next cell.
        self.tenant: str | None = None

    def apply_tenant(self, *_info: Any) -> None:
        """The ``pre_run_cell`` hook: make the chosen tenant current for the cell."""
        if self.tenant is not None:
            from reactive_nb.model.tenants import use_tenant

            use_tenant(self.tenant)

    def require_db(self) -> ReactiveDB:
        if self.db is None or self.db.closed:
            raise UsageError("not connected: run %reactive connect URL "
                             "(or set REACTIVE_NB_URL and run %reactive connect)")
        return self.db

    def close_lives(self) -> None:
        lives, self.lives = self.lives, {}
        for live in lives.values():
            live.close()

    def close(self) -> None:
        """Close every live query of the magic and the connection (idempotent)."""
        self.close_lives()
        if self.tenant is not None:
            from reactive_nb.model.tenants import use_tenant

            self.tenant = None
            use_tenant(DEFAULT_TENANT)
        db, self.db = self.db, None
        if db is not None:
            db.close()
            if self.shell.user_ns.get(DB_VARIABLE) is db:
                del self.shell.user_ns[DB_VARIABLE]


@magics_class
class ReactiveMagics(Magics):
    """``%reactive`` (line) and ``%%reactive`` (cell). Also the extension's settings:
    ``%config ReactiveMagics.page_size = 100`` applies to the tables created afterwards."""

    page_size = Int(50, help="Rows per page of the live table (each page request the "
                             "browser makes asks for at least this many rows).").tag(config=True)
    height = Int(0, help="Height of the live table's scroll box in pixels (0: as many "
                         "rows as there are, up to 15).").tag(config=True)

    def __init__(self, shell: InteractiveShell, state: _State) -> None:
        super().__init__(shell)  # type: ignore[no-untyped-call]
        self.state = state

    def table_options(self) -> dict[str, int | None]:
        """``LiveTable`` options from the settings, validated when they are used."""
        if self.page_size < 1:
            raise UsageError(f"ReactiveMagics.page_size must be at least 1, not {self.page_size}")
        if self.height < 0:
            raise UsageError(f"ReactiveMagics.height must be 0 or more, not {self.height}")
        return {"page_size": self.page_size, "height": self.height or None}

    @_magic_arguments("%reactive")  # shown as "%%reactive": IPython adds a "%"
    @_argument("name", help="the variable the live query is bound to (also the function name)")
    @_argument("--deps", help="tables it depends on, comma separated (default: the tables "
                             "the SQL reads)")
    @_argument("--priority", choices=["high", "normal", "low"], default="normal",
              help="refresh order among visible tables")
    @_argument("--ttl", type=float, help="seconds a result may be served without a change")
    @_argument("--key", help="primary-key columns, comma separated (to highlight changed rows)")
    @_argument("--no-display", action="store_true", help="bind the variable, show no table")
    @line_cell_magic  # type: ignore[untyped-decorator]
    def reactive(self, line: str, cell: str | None = None) -> Any:
        """Reactive SQL for notebooks.

        As a cell (``%%reactive NAME``): define the reactive function NAME from the SQL
        of the cell and bind its live query to the variable NAME. Each ``:param`` is read
        from the notebook variable of the same name and sent as a bound parameter.
        As a line: ``%reactive connect|status|refresh|priorities|tenant|tenants|close``
        (``%reactive --help`` lists them).
        """
        if cell is not None:
            return self._define(line, cell)
        words = _split(line)
        if not words or words[0] in ("-h", "--help", "help"):
            print(USAGE)
            return None
        command, rest = words[0], words[1:]
        if command == "connect":
            return self._connect(rest)
        if command.lower() in _SQL_WORDS:
            raise UsageError("%reactive takes a command, not SQL: write the SQL in a cell "
                             "that starts with %%reactive NAME (its live query is bound to "
                             "the variable NAME)")
        if command == "status":
            self._status(rest)
        elif command == "tenant":
            self._tenant(rest)
        elif command == "tenants":
            return self._tenants(rest)
        elif command == "refresh":
            self._refresh(rest)
        elif command == "priorities":
            self.state.require_db().priorities(rest)
        elif command == "close":
            if rest:
                raise UsageError("%reactive close takes no arguments")
            self.state.close()
        else:
            raise UsageError(f"%reactive: unknown command {command!r} (connect, status, "
                             "refresh, priorities, tenant, tenants, close; see --help)")
        return None

    # -- connect ---------------------------------------------------------------------------

    def _connect(self, words: list[str]) -> ReactiveDB:
        parser = _Parser("%reactive connect")
        parser.add_argument("url", nargs="?")
        parser.add_argument("--redis")
        parser.add_argument("--relations")
        parser.add_argument("--min-interval", type=float, default=0.05)
        parser.add_argument("--workers", type=int, default=4)
        args = parser.parse_args(words)
        url = args.url or os.environ.get("REACTIVE_NB_URL")
        if not url:
            raise UsageError("%reactive connect: give a database URL, or set REACTIVE_NB_URL")
        redis = args.redis or os.environ.get("REACTIVE_NB_REDIS") or None
        relations = _load_relations(args.relations) if args.relations else None

        from sqlalchemy.exc import SQLAlchemyError

        from reactive_nb.db import connect

        try:
            db = connect(url, relations=relations, redis=redis, min_interval=args.min_interval,
                         workers=args.workers)
        except SQLAlchemyError as exc:
            raise UsageError(f"%reactive connect: {one_line(exc)}") from None
        except (ValueError, ImportError, OSError) as exc:
            raise UsageError(f"%reactive connect: {one_line(exc)}") from None
        self.state.close()  # only once the new connection works
        self.state.db = db
        self.state.shell.user_ns[DB_VARIABLE] = db
        return db

    # -- %%reactive ------------------------------------------------------------------------

    def _define(self, line: str, sql: str) -> None:
        try:
            args = _margs.parse_argstring(self.reactive, line)  # type: ignore[no-untyped-call]
        except UsageError as exc:
            raise UsageError(f"%%reactive: {exc} (see %%reactive?)") from None
        name: str = args.name
        where = f"%%reactive {name}"
        shell = self.state.shell
        _check_name(name, where, shell)
        if not sql.strip():
            raise UsageError(f"{where}: the cell has no SQL")
        template = _TEMPLATE.search(sql)
        if template is not None:
            var = template.group(1) if template.group(1).isidentifier() else "name"
            raise UsageError(f"{where}: {template.group(0)} is not substituted; write :{var} "
                             f"instead (a bound parameter read from the variable {var})")
        options = self.table_options()
        db = self.state.require_db()
        from reactive_nb.db import ReactiveDB
        from reactive_nb.model.sql import sqlglot_dialect

        ns = shell.user_ns
        if isinstance(ns.get(name), ReactiveDB):
            raise UsageError(f"{where}: NAME {name!r} would overwrite the connection held by "
                             f"the variable {name}; choose another name")
        sql, params = _prepare(sql, where, sqlglot_dialect(db.engine.dialect.name))
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
                _sql_handler(db, sql, params))
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
        previous = self.state.lives.get(name)
        self.state.lives[name] = live
        ns[name] = live
        if previous is not None and previous is not live:
            previous.close()
        if not args.no_display:
            from IPython.display import display

            table = live.widget()  # new with this live query: the settings apply
            table.configure(**options)
            display(table)  # type: ignore[no-untyped-call]

    # -- status and refresh ----------------------------------------------------------------

    def _status(self, words: list[str]) -> None:
        if words:
            raise UsageError("%reactive status takes no arguments")
        db = self.state.require_db()
        from IPython.display import display

        frame = self.status_frame()
        display(frame)  # type: ignore[no-untyped-call]
        if frame.empty and db.functions:
            print("(no live query from %%reactive; functions: "
                  + ", ".join(sorted(db.functions)) + ")")

    # -- tenants ---------------------------------------------------------------------------

    def _tenant(self, words: list[str]) -> None:
        parser = _Parser("%reactive tenant")
        parser.add_argument("name", nargs="?")
        parser.add_argument("--none", action="store_true")
        args = parser.parse_args(words)
        if bool(args.name) == bool(args.none):
            raise UsageError("%reactive tenant: give a tenant NAME or --none")
        db = self.state.require_db()
        from reactive_nb.errors import ReactiveError
        from reactive_nb.model.tenants import use_tenant

        chosen = DEFAULT_TENANT if args.none else str(args.name)
        try:
            directory = db.tenant_directory
            if directory is not None:
                directory.use(None if args.none else chosen)
            else:
                use_tenant(db.check_tenant(chosen))
        except (ReactiveError, ValueError) as exc:
            raise UsageError(f"%reactive tenant: {one_line(exc)}") from None
        self.state.tenant = chosen

    def _tenants(self, words: list[str]) -> Any:
        if words:
            raise UsageError("%reactive tenants takes no arguments")
        db = self.state.require_db()
        from reactive_nb.errors import ReactiveError

        try:
            directory = db.tenant_directory
            if directory is not None:
                return directory.list()
            from reactive_nb._frames import pandas

            return pandas().DataFrame({"tenant": db.tenants.names()})
        except ReactiveError as exc:
            raise UsageError(f"%reactive tenants: {one_line(exc)}") from None

    def status_frame(self) -> pd.DataFrame:
        """What ``%reactive status`` shows: one row per live query of ``%%reactive``."""
        from reactive_nb._frames import pandas

        rows = [_status_row(name, live) for name, live in self.state.lives.items()]
        columns = ["name", "inputs", "watched tables", "status", "runs", "last run ms",
                   "hit rate", "visible"]
        frame: pd.DataFrame = pandas().DataFrame(rows, columns=columns)
        return frame

    def _refresh(self, words: list[str]) -> None:
        parser = _Parser("%reactive refresh")
        parser.add_argument("name", nargs="?")
        parser.add_argument("--all", action="store_true")
        args = parser.parse_args(words)
        self.state.require_db()
        if args.name and args.all:
            raise UsageError("%reactive refresh: give a NAME or --all, not both")
        if not args.name:
            for live in self.state.lives.values():
                live.refresh()
            return
        chosen = self.state.lives.get(args.name)
        if chosen is None:
            from reactive_nb.errors import closest

            hint = closest(args.name, self.state.lives)
            raise UsageError(f"%reactive refresh: no live query named {args.name!r}"
                             + (f" (did you mean {hint!r}?)" if hint else ""))
        chosen.refresh()


#: IPython's history variables: _, __, ___, _i, _ii, _iii, _5, _i5.
_IPYTHON_HISTORY = re.compile(r"_{1,3}|_i{1,3}|_i?\d+")


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


def _parameters(sql: str, where: str, dialect: str | None = None) -> list[str]:
    """The ``:name`` bind parameters of the SQL, in order (see ``_prepare``)."""
    return _prepare(sql, where, dialect)[1]


def _prepare(sql: str, where: str, dialect: str | None = None) -> tuple[str, list[str]]:
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


def _sql_handler(db: ReactiveDB, sql: str, params: list[str]) -> Any:
    """A handler taking exactly the SQL's parameters (keyword-only), running it bound."""
    import inspect

    def handler(**inputs: Any) -> Any:
        return db.read_sql(sql, inputs)

    handler.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY) for p in params])
    return handler


def _status_row(name: str, live: LiveQuery) -> dict[str, Any]:
    from reactive_nb.events import ALL_TABLES

    # The function's counters, not the live query's: the cell's own first run is a forced
    # fetch outside the live query (it shows SQL errors in the cell), whose result the live
    # query then reads from the cache. "hit rate" is None until something was looked up.
    fn: ReactiveFunction = live.function
    stats = fn.stats.as_dict()
    last = stats["last_ms"]
    looked = stats["hits"] + stats["misses"]
    return {
        "name": name,
        "inputs": json.dumps(live.inputs, default=repr, ensure_ascii=False),
        "watched tables": ", ".join(sorted(fn.watched - {ALL_TABLES})),
        "status": live.status,
        "runs": stats["runs"],
        "last run ms": None if last is None else round(last, 1),
        "hit rate": round(stats["hit_rate"], 3) if looked else None,
        "visible": live.visible,
    }


def _load_relations(path: str) -> dict[str, list[str]]:
    """Relations from a YAML or JSON file: ``{table: [related, ...]}``."""
    where = "%reactive connect --relations"
    if not path.endswith((".yaml", ".yml", ".json")):
        raise UsageError(f"{where}: {path} must end with .yaml, .yml or .json")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise UsageError(f"{where}: cannot read {path}: {exc.strerror}") from None
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # JSON or YAML syntax (yaml.YAMLError: yaml loads lazily)
        raise UsageError(f"{where}: {path}: {one_line(exc)}") from None
    if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(i, str) for i in v) for v in data.values()):
        raise UsageError(f"{where}: {path} must map each table to a list of table names")
    return {str(k): list(v) for k, v in data.items()}


# -- extension entry points ----------------------------------------------------------------


def load_ipython_extension(ip: InteractiveShell) -> None:
    """``%load_ext reactive_nb``: register ``%reactive`` / ``%%reactive``."""
    state = getattr(ip, STATE_ATTR, None)
    if state is None:
        state = _State(ip)
        setattr(ip, STATE_ATTR, state)
        ip.events.register("pre_run_cell", state.apply_tenant)  # type: ignore[no-untyped-call]
    ip.register_magics(ReactiveMagics(ip, state))  # type: ignore[no-untyped-call]


def unload_ipython_extension(ip: InteractiveShell) -> None:
    """``%unload_ext reactive_nb``: close the live queries and the connection, stop every
    thread the extension started, and remove the magics."""
    state: _State | None = getattr(ip, STATE_ATTR, None)
    if state is not None:
        try:
            state.close()
        finally:
            delattr(ip, STATE_ATTR)
            with contextlib.suppress(ValueError):
                ip.events.unregister(  # type: ignore[no-untyped-call]
                    "pre_run_cell", state.apply_tenant)
    # Magics.__init__ added the instance to %config's list: drop it with the magics.
    ip.configurables[:] = [c for c in ip.configurables if not isinstance(c, ReactiveMagics)]
    table = sys.modules.get("reactive_nb.ui.widgets.table")
    if table is not None:
        table.stop_flush_thread()
    manager = ip.magics_manager
    if manager is None:
        return
    for kind in ("line", "cell"):
        manager.magics[kind].pop("reactive", None)
    manager.registry.pop(ReactiveMagics.__name__, None)
