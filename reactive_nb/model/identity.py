"""The identity of a database, derived from the database itself rather than from its URL.

It names the database's Redis key space (``rnb:<identity>``). Kernels reaching one
database through different URLs (``127.0.0.1`` or ``localhost``, a relative path or a
symlink) then share cache entries and version counters, and two databases sharing one
Redis never do: sharing would serve one database's results for the other's query.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

__all__ = ["database_identity"]

#: Hex digits of an identity: 48 bits, so a collision among a Redis's databases is remote.
LENGTH = 12

# Guards _memory_ids: an in-memory database has nothing stable to name it, so each engine
# gets a random identity of its own (its data is visible to no other engine anyway).
_memory_lock = threading.Lock()
_memory_ids: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def database_identity(engine: Engine) -> str:
    """A short stable hash (``LENGTH`` hex digits) naming ``engine``'s database.

    PostgreSQL: the cluster's ``system_identifier`` with the database's name and oid (or,
    when ``pg_control_system()`` is not permitted, the server's address and port instead
    of the identifier). SQLite: the database file's real path and inode; a random id per
    engine in memory. Other dialects: the URL without driver and password.
    """
    dialect = engine.dialect.name
    if dialect == "postgresql":
        source = _postgresql(engine)
    elif dialect == "sqlite":
        source = _sqlite(engine)
    else:
        url = engine.url.set(drivername=engine.url.get_backend_name())
        source = "url:" + url.render_as_string(hide_password=True)  # "***" for any password
    return hashlib.blake2b(source.encode(), digest_size=LENGTH // 2).hexdigest()


def _internal(engine: Engine) -> Connection:
    """A connection whose statements change capture ignores (they are ours)."""
    return engine.connect().execution_options(reactive_nb_internal=True)


_PG_SYSTEM = """
SELECT system_identifier::text, current_database(),
       (SELECT oid::text FROM pg_database WHERE datname = current_database())
FROM pg_control_system()
"""

_PG_SERVER = """
SELECT host(inet_server_addr()), current_setting('port'), current_database(),
       (SELECT oid::text FROM pg_database WHERE datname = current_database())
"""


def _postgresql(engine: Engine) -> str:
    from sqlalchemy import exc, text

    with _internal(engine) as conn:
        try:
            system, name, oid = conn.execute(text(_PG_SYSTEM)).one()
            return f"pg:{system}:{name}:{oid}"
        except exc.DBAPIError as error:  # typically: permission denied (managed services)
            if error.connection_invalidated:
                raise
            conn.rollback()
        address, port, name, oid = conn.execute(text(_PG_SERVER)).one()
    return f"pg-server:{_host(address)}:{port}:{name}:{oid}"


def _host(address: str | None) -> str:
    """The server's address as every client on this machine sees it: a Unix socket (None)
    or a loopback address all mean "this machine"."""
    if address is None or address == "::1" or address.startswith("127."):
        return "local:" + socket.gethostname()
    return address


def _sqlite(engine: Engine) -> str:
    from sqlalchemy import text

    with _internal(engine) as conn:
        rows = conn.execute(text("PRAGMA database_list")).all()
    path = next((str(row[2] or "") for row in rows if row[1] == "main"), "")
    if not path:  # in memory, or a temporary database
        return "sqlite-memory:" + _memory_id(engine)
    real = os.path.realpath(path)
    try:
        stat = os.stat(real)
    except OSError:
        return f"sqlite:{real}"
    # The inode tells apart two machines' files at one path that share a Redis.
    return f"sqlite:{real}:{stat.st_dev}:{stat.st_ino}"


def _memory_id(engine: Engine) -> str:
    with _memory_lock:
        found = _memory_ids.get(engine)
        if found is None:
            found = _memory_ids[engine] = secrets.token_hex(16)
        return found
