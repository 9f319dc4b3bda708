"""``reactive-nb install-triggers`` and ``uninstall-triggers``: change capture in the
database itself, so writes made by any client are heard (in one database, or in every
tenant database a main database lists)."""

from __future__ import annotations

import argparse

from reactive_nb.errors import one_line
from reactive_nb.ui.cli.common import CliError, Subcommands, database_url, say


def add_parsers(sub: Subcommands) -> None:
    """The ``install-triggers`` and ``uninstall-triggers`` subcommands and their options."""
    install_parser = sub.add_parser("install-triggers", help="capture writes made by any client")
    install_parser.add_argument("url")
    install_parser.add_argument("--tables", help="comma-separated (default: every table)")
    install_parser.add_argument("--tenant-column",
                                help="column naming the tenant (PostgreSQL)")
    install_parser.add_argument("--tenants-from", metavar="MAIN_URL",
                                help="install in every tenant database listed by the main "
                                     "database MAIN_URL (URL is then the template of their "
                                     "URLs, with {database}) and on its directory tables")
    install_parser.add_argument("--database-query", metavar="SQL",
                                help="with --tenants-from: the query returning a tenant's "
                                     "database name, e.g. \"SELECT database_name FROM "
                                     "organization WHERE id = :tenant\"")
    install_parser.set_defaults(run=install)

    uninstall_parser = sub.add_parser("uninstall-triggers",
                                      help="remove what install-triggers added")
    uninstall_parser.add_argument("url")
    uninstall_parser.set_defaults(run=uninstall)


def install(args: argparse.Namespace) -> int:
    """Triggers in the database at URL, or in every tenant database (``--tenants-from``)."""
    if args.tenants_from:
        return _install_in_tenants(args)
    return _triggers(args, install=True)


def uninstall(args: argparse.Namespace) -> int:
    """Remove the triggers ``install`` added to the database at URL."""
    return _triggers(args, install=False)


def _triggers(args: argparse.Namespace, install: bool) -> int:
    from reactive_nb.db import connect

    database_url(args.url)  # a bad URL or a missing SQLite file: refused before connecting
    try:
        db = connect(args.url, capture="local",
                     tenant_column=getattr(args, "tenant_column", None))
    except Exception as exc:
        raise CliError(f"cannot connect: {one_line(exc)}") from None
    try:
        if install:
            tables = _tables(args.tables)
            names = db.install_triggers(tables)
            say(f"change capture installed on {len(names)} table(s): {', '.join(names)}")
        else:
            db.uninstall_triggers()
            say("change capture removed")
    except Exception as exc:
        raise CliError(one_line(exc)) from None
    finally:
        db.close()
    return 0


def _install_in_tenants(args: argparse.Namespace) -> int:
    """Triggers in every tenant database the main database lists (``db.tenancy``)."""
    from reactive_nb.db import connect

    if not args.database_query:
        raise CliError("--tenants-from needs --database-query (the query returning a "
                       "tenant's database name, with :tenant)")
    if "{database}" not in args.url:
        raise CliError(f"with --tenants-from, URL is the template of the tenant databases' "
                       f"URLs and must contain {{database}}, got {args.url!r}")
    database_url(args.tenants_from)
    try:
        db = connect(args.tenants_from, capture="local", workers=0,
                     tenant_column=args.tenant_column)
    except Exception as exc:
        raise CliError(f"cannot connect: {one_line(exc)}") from None
    try:
        installed = db.tenancy(database=args.database_query, url=args.url,
                               user="reactive-nb").install_triggers(_tables(args.tables))
    except Exception as exc:
        raise CliError(one_line(exc)) from None
    finally:
        db.close()
    for database, names in sorted(installed.items()):
        where = database or "the main database"
        say(f"{where}: change capture on {len(names)} table(s): {', '.join(names)}")
    return 0


def _tables(option: str | None) -> list[str] | None:
    """``--tables a,b``: the names listed (None: every table)."""
    return [t.strip() for t in option.split(",") if t.strip()] if option else None
