"""The line commands of ``%reactive``: connect, status, tenant, tenants and refresh.

Each takes the extension's state and the words after the command's name; mistakes are
one-line UsageErrors. ``priorities`` and ``close`` are one call each, made by the magic.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from reactive_nb.errors import one_line
from reactive_nb.events import DEFAULT_TENANT
from reactive_nb.ui.magics.state import DB_VARIABLE, MagicsState
from reactive_nb.ui.magics.usage import LineParser

if TYPE_CHECKING:
    import pandas as pd

    from reactive_nb.db import ReactiveDB
    from reactive_nb.live.functions import ReactiveFunction
    from reactive_nb.live.query import LiveQuery


def connect(state: MagicsState, words: list[str]) -> ReactiveDB:
    """``%reactive connect``: a new connection, which replaces the previous one only once
    it works."""
    parser = LineParser("%reactive connect")
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

    from reactive_nb.db import connect as connect_db

    try:
        db = connect_db(url, relations=relations, redis=redis, min_interval=args.min_interval,
                        workers=args.workers)
    except SQLAlchemyError as exc:
        raise UsageError(f"%reactive connect: {one_line(exc)}") from None
    except (ValueError, ImportError, OSError) as exc:
        raise UsageError(f"%reactive connect: {one_line(exc)}") from None
    state.close()  # only once the new connection works
    state.db = db
    state.shell.user_ns[DB_VARIABLE] = db
    return db


def status(state: MagicsState, words: list[str]) -> None:
    """``%reactive status``: display `status_frame`, or name the functions when no cell
    made a live query."""
    if words:
        raise UsageError("%reactive status takes no arguments")
    db = state.require_db()
    from IPython.display import display

    frame = status_frame(state.lives)
    display(frame)  # type: ignore[no-untyped-call]
    if frame.empty and db.functions:
        print("(no live query from %%reactive; functions: "
              + ", ".join(sorted(db.functions)) + ")")


def status_frame(lives: dict[str, LiveQuery]) -> pd.DataFrame:
    """One row per live query of ``%%reactive``, by the variable it is bound to."""
    from reactive_nb._frames import pandas

    rows = [_status_row(name, live) for name, live in lives.items()]
    columns = ["name", "inputs", "watched tables", "status", "runs", "last run ms",
               "hit rate", "visible"]
    frame: pd.DataFrame = pandas().DataFrame(rows, columns=columns)
    return frame


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


def tenant(state: MagicsState, words: list[str]) -> None:
    """``%reactive tenant NAME | --none``: the tenant of the cells from now on."""
    parser = LineParser("%reactive tenant")
    parser.add_argument("name", nargs="?")
    parser.add_argument("--none", action="store_true")
    args = parser.parse_args(words)
    if bool(args.name) == bool(args.none):
        raise UsageError("%reactive tenant: give a tenant NAME or --none")
    db = state.require_db()
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
    state.tenant = chosen


def tenants(state: MagicsState, words: list[str]) -> Any:
    """``%reactive tenants``: the tenants this user may open, as a frame."""
    if words:
        raise UsageError("%reactive tenants takes no arguments")
    db = state.require_db()
    from reactive_nb.errors import ReactiveError

    try:
        directory = db.tenant_directory
        if directory is not None:
            return directory.list()
        from reactive_nb._frames import pandas

        return pandas().DataFrame({"tenant": db.tenants.names()})
    except ReactiveError as exc:
        raise UsageError(f"%reactive tenants: {one_line(exc)}") from None


def refresh(state: MagicsState, words: list[str]) -> None:
    """``%reactive refresh [NAME|--all]``: re-run one live query, or every one, now."""
    parser = LineParser("%reactive refresh")
    parser.add_argument("name", nargs="?")
    parser.add_argument("--all", action="store_true")
    args = parser.parse_args(words)
    state.require_db()
    if args.name and args.all:
        raise UsageError("%reactive refresh: give a NAME or --all, not both")
    if not args.name:
        for live in state.lives.values():
            live.refresh()
        return
    chosen = state.lives.get(args.name)
    if chosen is None:
        from reactive_nb.errors import closest

        hint = closest(args.name, state.lives)
        raise UsageError(f"%reactive refresh: no live query named {args.name!r}"
                         + (f" (did you mean {hint!r}?)" if hint else ""))
    chosen.refresh()


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
