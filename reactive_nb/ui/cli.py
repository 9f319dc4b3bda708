"""The ``reactive-nb`` command: a demo to watch tables update, and tools for the change feed.

    reactive-nb demo [--headless] [--seconds N] [--db PATH | --url DBURL] [--redis URL]
    reactive-nb notify --redis URL [--url DBURL [--force]] [--tenant T] [--prefix P] TABLE...
    reactive-nb watch --redis URL [--url DBURL] [--tenant T ...] [--prefix P] [--seconds N]
    reactive-nb install-triggers URL [--tables a,b] [--tenant-column col]
    reactive-nb install-triggers TEMPLATE --tenants-from MAIN_URL --database-query SQL
    reactive-nb uninstall-triggers URL

``notify`` is for writers that do not use reactive_nb; it does exactly what these two
Redis commands do (the version first, so a reader that hears the change sees it)::

    HINCRBY P:{T}:versions TABLE 1
    XADD P:{T}:changes MAXLEN ~ 10000 * tables TABLE origin cli

With ``--url DBURL`` the command works as ``rnb.connect(DBURL, redis=URL)`` does: the key
prefix P is ``rnb:<identity>``, derived from the database itself, and ``notify`` names
each table as the library does (``Organization`` and ``public.organization`` are
``organization``) and refuses a table the database does not have, unless ``--force``.
Without ``--url`` the prefix is ``rnb`` (what a ReactiveDB given ``key_prefix="rnb"``
uses) and names are only lower-cased: nothing can check them or resolve a schema.
``--prefix`` overrides the prefix either way.

Every error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from reactive_nb.errors import one_line

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from reactive_nb.db import ReactiveDB
    from reactive_nb.live.query import LiveQuery

PROG = "reactive-nb"
DEFAULT_TENANT = "default"


class CliError(Exception):
    """A problem to report on one line, with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see {self.prog} --help)")


def _clock() -> str:
    return datetime.now().strftime("%H:%M:%S.%f")[:-3]


def _say(*parts: Any, file: Any = None) -> None:
    print(*parts, file=file or sys.stdout, flush=True)


# -- demo ----------------------------------------------------------------------------------

LATEST_SQL = """
SELECT m.id, a.name AS agent, m.channel, m.body, m.created_at
FROM message m JOIN agent a ON a.id = m.from_agent_id
WHERE m.organization_id = :org
ORDER BY m.id DESC
LIMIT 20
"""
BY_STATUS_SQL = """
SELECT status, COUNT(*) AS agents FROM agent
WHERE organization_id = :org GROUP BY status ORDER BY status
"""
PER_ORG_SQL = """
SELECT o.id AS organization, COUNT(m.id) AS messages
FROM organization o LEFT JOIN message m ON m.organization_id = o.id
GROUP BY o.id ORDER BY o.id
"""


def _demo(args: argparse.Namespace) -> int:
    from reactive_nb.ui import demo

    if args.seconds <= 0:
        raise CliError("--seconds must be positive")
    if args.url and args.db:
        raise CliError("give --db PATH or --url DBURL, not both")
    if args.create:
        return _demo_create(args.create)
    if args.headless and args.voila:
        raise CliError("give --headless or --voila, not both")
    url = args.url or f"sqlite:///{Path(args.db or 'demo.db').resolve()}"
    try:
        created = demo.ensure_demo(url)
        if not args.headless and not args.redis:
            _install_demo_triggers(url)  # the notebook's kernel hears the writer through them
    except Exception as exc:
        raise CliError(f"cannot prepare the demo database: {one_line(exc)}") from None
    rows = demo.count(url)
    _say(f"demo database: {_shown(url)} ({'created' if created else 'existing'}, "
         f"{len(demo.ORGANIZATIONS)} organizations, {rows:,} messages)")
    from reactive_nb.db import connect

    try:
        # This process shows nothing but its own writes in --headless mode, and nothing at
        # all beside JupyterLab: capturing its own writes is enough.
        db = connect(url, redis=args.redis, capture="local")
    except Exception as exc:
        raise CliError(f"cannot connect: {one_line(exc)}") from None
    writer = demo.DemoWriter(db, interval=args.interval)
    try:
        if args.headless:
            return _demo_headless(db, writer, args.seconds)
        return _demo_serve(url, args, writer)
    finally:
        writer.close()
        db.close()


def _demo_create(path: str) -> int:
    """``demo --create PATH``: the demo database at PATH (with triggers), then exit."""
    from reactive_nb.ui import demo

    target = Path(path).resolve()
    url = f"sqlite:///{target}"
    try:
        created = demo.ensure_demo(url)
        _install_demo_triggers(url)
    except Exception as exc:
        raise CliError(f"cannot create the demo database: {one_line(exc)}") from None
    _say(f"demo database: {target} ({'created' if created else 'existing'}, "
         f"{len(demo.ORGANIZATIONS)} organizations, {demo.count(url):,} messages)")
    return 0


def _shown(url: str) -> str:
    """A URL fit to print: the password masked."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _install_demo_triggers(url: str) -> None:
    """Triggers on the demo tables, so a notebook kernel sees the writer's writes (without
    Redis, they are how another process hears of a write)."""
    from reactive_nb.db import connect
    from reactive_nb.ui import demo

    db = connect(url, capture="local")
    try:
        if db.engine.dialect.name in ("sqlite", "postgresql"):
            db.install_triggers(demo.TABLES)
    finally:
        db.close()


def _demo_headless(db: ReactiveDB, writer: Any, seconds: float) -> int:
    """Print what each refresh of a few per-tenant live queries changed while the writer
    writes as several tenants: a write as one tenant refreshes only that tenant's results
    (and the unscoped ones)."""
    queries = _demo_queries(db)
    lock = threading.Lock()
    updates = {"all": 0, "caused": 0}
    lives: list[LiveQuery] = []

    def printer(label: str) -> Any:
        previous: dict[str, Any] = {"df": None}

        def on_df(change: Any) -> None:
            live = change["owner"]
            df, old = change["new"], previous["df"]
            previous["df"] = df
            if df is None:
                return
            now = time.perf_counter()
            with lock:
                updates["all"] += 1
                if old is None:
                    _say(f"[{_clock()}] {label}: {len(df)} rows, {live.status}, run #1")
                    return
                updates["caused"] += 1
                what = _difference(old, df)
                committed = writer.last_commit.get(live.tenant)
                if committed is None and writer.last_commit:  # unscoped: the latest write
                    committed = max(writer.last_commit.values())
                after = f" ({(now - committed[0]) * 1000:.1f} ms after commit)" if committed else ""
                _say(f"[{_clock()}] {label}: {what}{after}")
        return on_df

    try:
        for label, fn, inputs, tenant in queries:
            live = fn.live(**inputs, tenant=tenant)
            live.observe(printer(label), names=["df"])
            lives.append(live)
        for live in lives:
            live.wait(timeout=30)
        writer.start()
        _say(f"[{_clock()}] writer started ({1 / writer.interval:.0f} writes/s, as "
             f"{len(writer._orgs)} tenants); watching {len(lives)} live queries for "
             f"{seconds:g} s (--seconds N; Ctrl-C to stop)")
        started = time.monotonic()
        try:
            threading.Event().wait(seconds)
        except KeyboardInterrupt:
            _say("interrupted")
        elapsed = time.monotonic() - started
        writer.close()
    finally:
        for live in lives:
            live.close()
    with lock:
        caused, total = updates["caused"], updates["all"]
    _say(f"summary: {len(lives)} live queries, {total} refreshes ({caused} caused by the "
         f"writer's {writer.writes} writes: {writer.messages} messages, "
         f"{writer.status_changes} agent status changes) in {elapsed:.1f} s")
    if caused < 1:
        _say(f"{PROG} demo: no live update arrived after a write", file=sys.stderr)
        return 1
    return 0


def _difference(old: Any, new: Any) -> str:
    """What changed between two frames, in a few words: new rows by id (with their body),
    else the changed cells of a small frame."""
    if "id" in new.columns and "id" in old.columns:
        added = new[~new["id"].isin(set(old["id"]))]
        if len(added):
            first = str(added["body"].iloc[0]) if "body" in added.columns else ""
            shown = f' "{first}"' if first else ""
            return f"+{len(added)} row{'s' if len(added) > 1 else ''}{shown}"
    if len(old.columns) == 2 and len(new.columns) == 2 and list(old.columns) == list(new.columns):
        before = dict(zip(old.iloc[:, 0], old.iloc[:, 1], strict=True))
        after = dict(zip(new.iloc[:, 0], new.iloc[:, 1], strict=True))
        moved = [f"{k} {before.get(k, 0)}->{after.get(k, 0)}"
                 for k in sorted({*before, *after}, key=str)
                 if before.get(k, 0) != after.get(k, 0)]
        if moved:
            return ", ".join(moved)
    if old.equals(new):
        return "re-ran, same rows"
    return f"{len(new)} rows, changed"


def _demo_queries(db: ReactiveDB) -> list[tuple[str, Any, dict[str, Any], str | None]]:
    @db.reactive(name="messages.latest")
    def latest(org: str) -> Any:
        return db.read_sql(LATEST_SQL, org=org)

    @db.reactive(name="agents.by_status")
    def by_status(org: str) -> Any:
        return db.read_sql(BY_STATUS_SQL, org=org)

    @db.reactive(name="messages.per_org")
    def per_org() -> Any:
        return db.read_sql(PER_ORG_SQL)

    return [  # (label, function, inputs, tenant): the tenant is the organization
        ("messages.latest(acme)", latest, {"org": "acme"}, "acme"),
        ("messages.latest(globex)", latest, {"org": "globex"}, "globex"),
        ("agents.by_status(acme)", by_status, {"org": "acme"}, "acme"),
        ("messages.per_org()", per_org, {}, None),
    ]


def demo_folder(folder: str | Path) -> dict[str, Path]:
    """The demo notebooks in ``folder`` (created): each written unless already there, so a
    user's edits stay theirs and tracked files are never touched. Returns name -> path."""
    from reactive_nb.ui import demo

    target = Path(folder).resolve()
    target.mkdir(parents=True, exist_ok=True)
    found = {}
    for name, write in demo.DEMO_NOTEBOOKS.items():
        path = target / name
        if not path.exists():
            write(path)
        found[name] = path
    return found


def _demo_serve(url: str, args: argparse.Namespace, writer: Any) -> int:
    """Serve the demo notebooks (JupyterLab, or the tenant dashboard with Voila) from the
    working folder while the writer writes."""
    import importlib.util

    app = "voila" if args.voila else "jupyterlab"
    if importlib.util.find_spec(app) is None:
        extra = "dashboard" if args.voila else "notebook"
        raise CliError(f"{app} is not installed: pip install 'reactive_nb[{extra}]', "
                       "or run reactive-nb demo --headless")
    notebooks = demo_folder(args.folder)
    notebook = notebooks["tenant_dashboard.ipynb" if args.voila else "quickstart.ipynb"]
    _say(f"notebooks: {notebook.parent} (your copies: edit freely)")
    env = dict(os.environ, REACTIVE_NB_URL=url)
    if args.redis:
        env["REACTIVE_NB_REDIS"] = args.redis
    writer.start()
    command = [sys.executable, "-m", app, str(notebook)]
    if args.port:
        command.append(f"--port={args.port}")
    if args.no_browser:
        command.append("--no-browser")
    if args.voila:
        _say(f"writer started ({1 / writer.interval:.0f} writes/s); serving {notebook.name} "
             f"with Voila (REACTIVE_NB_URL={_shown(url)}; Ctrl-C to stop)")
    else:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")  # containers often run as root; JupyterLab refuses
        _say(f"writer started ({1 / writer.interval:.0f} writes/s); opening {notebook} in "
             "JupyterLab (Ctrl-C to stop)")
    process = subprocess.Popen(command, env=env, cwd=notebook.parent)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server and the writer too
    try:
        process.wait()
    except KeyboardInterrupt:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    _say(f"writer stopped after {writer.writes} writes")
    if process.returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise CliError(f"{app} exited with status {process.returncode}")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# -- the change feed -----------------------------------------------------------------------


def _redis(url: str) -> Any:
    """A Redis client that answered a PING; any problem is a one-line CliError."""
    import redis

    from reactive_nb.stores.bus.client import client_from_url

    try:  # "?cluster=true": a Redis Cluster (any node's address)
        client = client_from_url(url, socket_connect_timeout=2, socket_timeout=5)
    except ValueError as exc:
        raise CliError(f"bad Redis URL {url!r}: {one_line(exc)}") from None
    except (redis.ConnectionError, redis.TimeoutError,
            redis.exceptions.RedisClusterException) as exc:  # a cluster connects at once
        raise CliError(f"cannot reach Redis: {one_line(exc)}") from None
    try:
        client.ping()
    except Exception as exc:
        client.close()
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            raise CliError(f"cannot reach Redis: {one_line(exc)}") from None
        if isinstance(exc, ValueError):  # a part of the URL that only connecting reads
            raise CliError(f"bad Redis URL {url!r}: {one_line(exc)}") from None
        raise CliError(f"Redis refused the connection: {one_line(exc)}") from None
    return client


def _database_url(url: str) -> URL:
    """The parsed database URL; a SQLite file that does not exist is refused (connecting
    would create an empty one)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CliError(f"bad database URL: {one_line(exc)}") from None
    database = parsed.database
    if (parsed.get_backend_name() == "sqlite" and database and database != ":memory:"
            and not database.startswith("file:") and "uri" not in parsed.query
            and not Path(database).exists()):
        raise CliError(f"no SQLite database at {database}")
    return parsed


def _resolved(url: str, tables: list[str], force: bool) -> tuple[str, list[str]]:
    """The Redis key prefix of the database at ``url`` (``rnb:<identity>``, as
    ``connect(url, redis=...)`` derives it) and ``tables`` named canonically; an unknown
    table is refused unless ``force``."""
    from sqlalchemy import create_engine

    from reactive_nb.errors import RelationError
    from reactive_nb.model.identity import database_identity
    from reactive_nb.model.relations import Catalog

    parsed = _database_url(url)
    try:
        engine = create_engine(parsed)
    except Exception as exc:  # no such dialect or driver
        raise CliError(f"cannot connect: {one_line(exc)}") from None
    try:
        catalog = Catalog.inspect(engine)
        prefix = f"rnb:{database_identity(engine)}"
    except Exception as exc:
        raise CliError(f"cannot connect: {one_line(exc)}") from None
    finally:
        engine.dispose()
    names = []
    for table in tables:
        try:
            names.append(catalog.resolve(table, "this database"))
        except RelationError as exc:
            if not force:
                raise CliError(f"{exc}; --force notifies it anyway") from None
            names.append(catalog.canonical(table))
    return prefix, list(dict.fromkeys(names))


def _notify(args: argparse.Namespace) -> int:
    """Bump the tables' versions, then publish the change: what HINCRBY + XADD do."""
    from reactive_nb.changes import ChangeRecorder
    from reactive_nb.model.relations import canonical
    from reactive_nb.stores.bus import RedisBus
    from reactive_nb.stores.health import StoreHealth
    from reactive_nb.stores.versions import RedisVersions

    tables = list(dict.fromkeys(args.tables))
    if any(not t.strip() or "," in t for t in tables):
        raise CliError("table names must be non-empty and contain no ','")
    if args.force and not args.url:
        raise CliError("--force needs --url (without it no table is checked)")
    if args.url:
        prefix, tables = _resolved(args.url, tables, args.force)
    else:
        prefix, tables = "rnb", list(dict.fromkeys(canonical(t, None) for t in tables))
    prefix = args.prefix or prefix
    client = _redis(args.redis)
    try:
        versions = RedisVersions(client, prefix=prefix)
        bus = RedisBus(client, prefix=prefix, origin="cli")
        try:  # the same bumps and announcements as a captured write (errors raise here)
            ChangeRecorder(versions, bus, StoreHealth(versions), origin="cli").committed(
                args.tenant, frozenset(tables))
            bumped = versions.get(args.tenant, tables)
        finally:
            bus.close()
    except CliError:
        raise
    except Exception as exc:
        raise CliError(f"cannot notify: {one_line(exc)}") from None
    finally:
        client.close()
    shown = ", ".join(f"{t} v{bumped.get(t, '?')}" for t in tables)
    _say(f"notified {args.tenant}: {shown}")
    return 0


def _watch(args: argparse.Namespace) -> int:
    """Print every change published for the followed tenants, one line each."""
    from reactive_nb.events import Change
    from reactive_nb.stores.bus import RedisBus

    if args.seconds is not None and args.seconds <= 0:
        raise CliError("--seconds must be positive")
    prefix = args.prefix or (_resolved(args.url, [], force=False)[0] if args.url else "rnb")
    client = _redis(args.redis)
    tenants = list(dict.fromkeys(args.tenant or [DEFAULT_TENANT, *_tenants(client, prefix)]))

    def show(change: Change) -> None:
        _say(f"[{_clock()}] {change.tenant}: {', '.join(sorted(change.tables))} "
             f"(origin {change.origin})")

    bus = RedisBus(client, prefix=prefix, origin=f"{PROG}-watch:{os.getpid()}")
    try:
        bus.subscribe(show)
        for tenant in tenants:
            bus.follow(tenant)
        until = f"for {args.seconds:g} s" if args.seconds else "until Ctrl-C"
        _say(f"watching {', '.join(tenants)} (prefix {prefix}) {until}")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait(args.seconds)
    finally:
        bus.close()
        client.close()
    return 0


def _tenants(client: Any, prefix: str) -> list[str]:
    """Tenants that have a change stream under ``prefix`` now."""
    found = []
    for key in client.scan_iter(match=f"{prefix}:{{*}}:changes", count=1000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        found.append(name[len(prefix) + 2: -len("}:changes")])
    return sorted(found)


# -- triggers ------------------------------------------------------------------------------


def _triggers(args: argparse.Namespace, install: bool) -> int:
    from reactive_nb.db import connect

    _database_url(args.url)  # a bad URL or a missing SQLite file: refused before connecting
    try:
        db = connect(args.url, capture="local",
                     tenant_column=getattr(args, "tenant_column", None))
    except Exception as exc:
        raise CliError(f"cannot connect: {one_line(exc)}") from None
    try:
        if install:
            tables = ([t.strip() for t in args.tables.split(",") if t.strip()]
                      if args.tables else None)
            names = db.install_triggers(tables)
            _say(f"change capture installed on {len(names)} table(s): {', '.join(names)}")
        else:
            db.uninstall_triggers()
            _say("change capture removed")
    except Exception as exc:
        raise CliError(one_line(exc)) from None
    finally:
        db.close()
    return 0


def _tenant_triggers(args: argparse.Namespace) -> int:
    """Triggers in every tenant database the main database lists (``db.tenancy``)."""
    from reactive_nb.db import connect

    if not args.database_query:
        raise CliError("--tenants-from needs --database-query (the query returning a "
                       "tenant's database name, with :tenant)")
    if "{database}" not in args.url:
        raise CliError(f"with --tenants-from, URL is the template of the tenant databases' "
                       f"URLs and must contain {{database}}, got {args.url!r}")
    _database_url(args.tenants_from)
    try:
        db = connect(args.tenants_from, capture="local", workers=0,
                     tenant_column=args.tenant_column)
    except Exception as exc:
        raise CliError(f"cannot connect: {one_line(exc)}") from None
    try:
        tables = ([t.strip() for t in args.tables.split(",") if t.strip()]
                  if args.tables else None)
        installed = db.tenancy(database=args.database_query, url=args.url,
                               user="reactive-nb").install_triggers(tables)
    except Exception as exc:
        raise CliError(one_line(exc)) from None
    finally:
        db.close()
    for database, names in sorted(installed.items()):
        where = database or "the main database"
        _say(f"{where}: change capture on {len(names)} table(s): {', '.join(names)}")
    return 0


# -- entry point ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="reactive_nb: tables that keep themselves current")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    demo = sub.add_parser("demo", help="demo database + writer; JupyterLab, Voila or "
                          "--headless")
    demo.add_argument("--headless", action="store_true",
                      help="print what each live update changed in the terminal instead of "
                      "opening JupyterLab")
    demo.add_argument("--voila", action="store_true",
                      help="serve the tenant dashboard with Voila instead of JupyterLab")
    demo.add_argument("--seconds", type=float, default=10.0,
                      help="how long --headless runs, in seconds (default 10)")
    demo.add_argument("--db", help="SQLite file of the demo (default ./demo.db)")
    demo.add_argument("--url", help="use this database URL instead of a SQLite file")
    demo.add_argument("--redis", help="Redis URL: shared cache, versions and change bus")
    demo.add_argument("--create", metavar="PATH",
                      help="only create the demo SQLite database at PATH (with triggers), "
                      "then exit")
    demo.add_argument("--folder", default="reactive-nb-demo",
                      help="working folder the demo notebooks are copied to "
                      "(default ./reactive-nb-demo)")
    demo.add_argument("--port", type=int, help="port of JupyterLab or Voila")
    demo.add_argument("--no-browser", action="store_true",
                      help="do not open a browser (JupyterLab, Voila)")
    demo.add_argument("--interval", type=float, default=0.25, help=argparse.SUPPRESS)

    url_help = ("the database: check and name tables as the library does, and use its "
                "key prefix rnb:<identity>")
    prefix_help = "first part of every Redis key (default: rnb, or rnb:<identity> with --url)"
    notify = sub.add_parser("notify", help="publish a change made by another program")
    notify.add_argument("--redis", required=True)
    notify.add_argument("--url", metavar="DBURL", help=url_help)
    notify.add_argument("--force", action="store_true",
                        help="notify tables the database does not have (with --url)")
    notify.add_argument("--tenant", default=DEFAULT_TENANT)
    notify.add_argument("--prefix", help=prefix_help)
    notify.add_argument("tables", nargs="+", metavar="TABLE")

    watch = sub.add_parser("watch", help="print changes as they arrive")
    watch.add_argument("--redis", required=True)
    watch.add_argument("--url", metavar="DBURL", help=url_help)
    watch.add_argument("--tenant", action="append",
                       help="tenant to follow (repeatable; default: every tenant with a stream)")
    watch.add_argument("--prefix", help=prefix_help)
    watch.add_argument("--seconds", type=float, help="stop after N seconds")

    install = sub.add_parser("install-triggers", help="capture writes made by any client")
    install.add_argument("url")
    install.add_argument("--tables", help="comma-separated (default: every table)")
    install.add_argument("--tenant-column", help="column naming the tenant (PostgreSQL)")
    install.add_argument("--tenants-from", metavar="MAIN_URL",
                         help="install in every tenant database listed by the main database "
                              "MAIN_URL (URL is then the template of their URLs, with "
                              "{database}) and on its directory tables")
    install.add_argument("--database-query", metavar="SQL",
                         help="with --tenants-from: the query returning a tenant's database "
                              "name, e.g. \"SELECT database_name FROM organization WHERE "
                              "id = :tenant\"")

    uninstall = sub.add_parser("uninstall-triggers", help="remove what install-triggers added")
    uninstall.add_argument("url")

    return parser


def _version() -> str:
    from reactive_nb import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    parser = build_parser()
    command = "?"
    try:
        args = parser.parse_args(argv)
        command = args.command
        if command == "demo":
            return _demo(args)
        if command == "notify":
            return _notify(args)
        if command == "watch":
            return _watch(args)
        if command == "install-triggers" and args.tenants_from:
            return _tenant_triggers(args)
        return _triggers(args, install=command == "install-triggers")
    except CliError as exc:
        where = PROG if command == "?" else f"{PROG} {command}"
        print(f"{where}: {exc}", file=sys.stderr, flush=True)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # unforeseen: still one line, with the exception's type
        where = PROG if command == "?" else f"{PROG} {command}"
        print(f"{where}: {one_line(exc, typed=True)}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
