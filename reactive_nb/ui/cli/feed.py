"""``reactive-nb notify`` and ``reactive-nb watch``: the change feed in Redis, for
programs that do not use reactive_nb (see the package docstring for the key layout)."""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
from typing import TYPE_CHECKING, Any

from reactive_nb.errors import one_line
from reactive_nb.events import DEFAULT_TENANT
from reactive_nb.ui.cli.common import PROG, CliError, Subcommands, clock, database_url, say

if TYPE_CHECKING:
    from reactive_nb.events import Change


#: Without ``--tenant``, ``watch`` looks for new tenants' streams at least this often.
RESCAN_SECONDS = 5.0


def add_parsers(sub: Subcommands) -> None:
    """The ``notify`` and ``watch`` subcommands and their options."""
    url_help = ("the database: check and name tables as the library does, and use its "
                "key prefix rnb:<identity>")
    prefix_help = "first part of every Redis key (default: rnb, or rnb:<identity> with --url)"
    notify_parser = sub.add_parser("notify", help="publish a change made by another program")
    notify_parser.add_argument("--redis", required=True)
    notify_parser.add_argument("--url", metavar="DBURL", help=url_help)
    notify_parser.add_argument("--force", action="store_true",
                               help="notify tables the database does not have (with --url)")
    notify_parser.add_argument("--tenant", default=DEFAULT_TENANT)
    notify_parser.add_argument("--prefix", help=prefix_help)
    notify_parser.add_argument("tables", nargs="+", metavar="TABLE")
    notify_parser.set_defaults(run=notify)

    watch_parser = sub.add_parser("watch", help="print changes as they arrive")
    watch_parser.add_argument("--redis", required=True)
    watch_parser.add_argument("--url", metavar="DBURL", help=url_help)
    watch_parser.add_argument("--tenant", action="append",
                              help="tenant to follow (repeatable; default: every tenant "
                                   "with a stream, and each new one from its first "
                                   "announced change on)")
    watch_parser.add_argument("--prefix", help=prefix_help)
    watch_parser.add_argument("--seconds", type=float, help="stop after N seconds")
    watch_parser.set_defaults(run=watch)


def notify(args: argparse.Namespace) -> int:
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
    say(f"notified {args.tenant}: {shown}")
    return 0


def watch(args: argparse.Namespace) -> int:
    """Print every change published for the followed tenants, one line each. Without
    ``--tenant``: every tenant, including those that appear later (a tenant's write is
    announced on the unscoped stream, which wakes a rescan of the streams; a rescan also
    runs every few seconds)."""
    import time

    from reactive_nb.changes import BY_TENANTS
    from reactive_nb.stores.bus import RedisBus

    if args.seconds is not None and args.seconds <= 0:
        raise CliError("--seconds must be positive")
    prefix = args.prefix or (_resolved(args.url, [], force=False)[0] if args.url else "rnb")
    client = _redis(args.redis)
    every = not args.tenant
    tenants = list(dict.fromkeys(args.tenant or [DEFAULT_TENANT, *_tenants(client, prefix)]))
    announced = threading.Event()

    def show(change: Change) -> None:
        say(f"[{clock()}] {change.tenant}: {', '.join(sorted(change.tables))} "
            f"(origin {change.origin})")
        if every and change.tenant == DEFAULT_TENANT and any(
                table.endswith(BY_TENANTS) for table in change.tables):
            announced.set()  # some tenant wrote: maybe one not followed yet

    bus = RedisBus(client, prefix=prefix, origin=f"{PROG}-watch:{os.getpid()}")
    try:
        bus.subscribe(show)
        for tenant in tenants:
            bus.follow(tenant)
        until = f"for {args.seconds:g} s" if args.seconds else "until Ctrl-C"
        say(f"watching {', '.join(tenants)} (prefix {prefix}) {until}")
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        with contextlib.suppress(KeyboardInterrupt):
            while deadline is None or (left := deadline - time.monotonic()) > 0:
                announced.wait(RESCAN_SECONDS if deadline is None
                               else min(left, RESCAN_SECONDS))
                announced.clear()
                if every:
                    for tenant in _tenants(client, prefix):
                        if tenant not in tenants:
                            tenants.append(tenant)
                            bus.follow(tenant)
                            say(f"[{clock()}] watching {tenant} too")
    finally:
        bus.close()
        client.close()
    return 0


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


def _resolved(url: str, tables: list[str], force: bool) -> tuple[str, list[str]]:
    """The Redis key prefix of the database at ``url`` (``rnb:<identity>``, as
    ``connect(url, redis=...)`` derives it) and ``tables`` named canonically; an unknown
    table is refused unless ``force``."""
    from sqlalchemy import create_engine

    from reactive_nb.errors import RelationError
    from reactive_nb.model.identity import database_identity
    from reactive_nb.model.relations import Catalog

    parsed = database_url(url)
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


def _tenants(client: Any, prefix: str) -> list[str]:
    """Tenants that have a change stream under ``prefix`` now."""
    found = []
    for key in client.scan_iter(match=f"{prefix}:{{*}}:changes", count=1000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        found.append(name[len(prefix) + 2: -len("}:changes")])
    return sorted(found)
