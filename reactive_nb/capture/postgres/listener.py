"""The PostgreSQL LISTEN thread: notifications in, ``ExternalChange`` events out.

``PostgresListener`` reconnects with back-off when its connection drops, reporting a
``lost`` change because LISTEN/NOTIFY has no replay.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from reactive_nb.capture.external import ExternalChange
from reactive_nb.capture.postgres.sql import CHANNEL
from reactive_nb.errors import ClosedError
from reactive_nb.threads import Background

logger = logging.getLogger(__name__)

THREAD_NAME = "reactive_nb-pg-listener"
APPLICATION_NAME = "reactive_nb-listener"

_POLL_TIMEOUT = 0.25  # seconds between two looks at the stop event
_INITIAL_BACKOFF = 0.05

def conninfo_from_url(url: sqlalchemy.URL | str) -> str:
    """A libpq conninfo string for ``psycopg.connect`` from a SQLAlchemy URL.

    Parsed the way SQLAlchemy's psycopg dialect does it, so query parameters,
    multiple hosts and Unix sockets carry over.
    """
    parsed = sqlalchemy.make_url(url) if isinstance(url, str) else url
    dialect_class: Any = PGDialect_psycopg  # untyped in SQLAlchemy
    _, params = dialect_class().create_connect_args(parsed)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def parse_payload(payload: str) -> ExternalChange:
    """The ``ExternalChange`` a trigger's payload describes; ValueError if malformed.

    ``{"t": table, "x": txid}`` plus, when present, ``"p"`` (the partitioned parents of
    a written partition: they changed too) and ``"k"`` (the tenants written). ``"t"`` is
    ``"*"`` after DDL: every table.
    """
    try:
        obj = json.loads(payload)
    except ValueError as exc:
        raise ValueError(f"malformed notification payload: {payload!r:.200}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"malformed notification payload: {payload!r:.200}")
    table, txid, keys, parents = obj.get("t"), obj.get("x"), obj.get("k"), obj.get("p")
    if not (isinstance(table, str) and table and isinstance(txid, str) and txid):
        raise ValueError(f"malformed notification payload: {payload!r:.200}")
    if not (parents is None or _strings(parents)):
        raise ValueError(f"malformed notification payload: {payload!r:.200}")
    tenants: frozenset[str] | None = None
    if keys is not None:
        if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            raise ValueError(f"malformed notification payload: {payload!r:.200}")
        tenants = frozenset(keys)
    return ExternalChange(frozenset({table, *(parents or ())}), tenants, txid)


# libpq settings the listener adds unless the conninfo sets them: a name to find its
# backend by, a bounded connect, and TCP keepalives so a silently dead peer is noticed.
_LISTENER_DEFAULTS = {
    "application_name": APPLICATION_NAME,
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


class PostgresListener:
    """Turns NOTIFYs on ``channel`` into ``ExternalChange`` calls to ``on_change``.

    One daemon thread (``reactive_nb-pg-listener``) owns an autocommit psycopg
    connection. When the connection drops it logs one warning, reconnects with
    exponential back-off (50 ms doubling up to ``backoff_cap``) and, once listening
    again, emits ``ExternalChange.everything_lost()``: notifications sent meanwhile are
    gone. ``on_change`` runs on the listener thread; its exceptions are logged.
    ``start``/``close`` are meant to be called by the owner's thread, not concurrently.
    """

    def __init__(
        self,
        conninfo: str,
        on_change: Callable[[ExternalChange], None],
        channel: str = CHANNEL,
        backoff_cap: float = 5.0,
    ) -> None:
        params: dict[str, Any] = conninfo_to_dict(conninfo)
        for key, value in _LISTENER_DEFAULTS.items():
            params.setdefault(key, value)
        self._conninfo = make_conninfo("", **params)
        self._on_change = on_change
        self._channel = channel
        self._backoff_cap = max(backoff_cap, _INITIAL_BACKOFF)
        self._thread: Background | None = None  # made by start(), once connected
        self._closed = False

    def start(self) -> None:
        """Connect and LISTEN, then start the thread; a write committed after this
        returns is seen. Connection errors are raised here (psycopg.OperationalError)."""
        if self._closed:
            raise ClosedError("this PostgresListener was closed")
        if self._thread is not None:
            return
        conn = self._connect()
        self._thread = Background(THREAD_NAME, functools.partial(self._run, conn))
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and close its connection (returns within ~0.3 s; a reconnect
        attempt can block up to connect_timeout). Idempotent; from ``on_change`` it only
        asks the loop to end, which it does on its own."""
        self._closed = True
        if self._thread is not None:
            self._thread.stop()

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._conninfo, autocommit=True)
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self, conn: psycopg.Connection[Any] | None, stop: threading.Event) -> None:
        backoff = _INITIAL_BACKOFF
        try:
            while not stop.is_set():
                if conn is None:
                    try:
                        conn = self._connect()
                    except psycopg.Error as exc:
                        logger.debug("PostgreSQL listener: reconnect failed: %s", exc)
                        stop.wait(backoff)
                        backoff = min(backoff * 2, self._backoff_cap)
                        continue
                    logger.info("PostgreSQL listener reconnected; every table counts as "
                                "changed (notifications may have been lost)")
                    backoff = _INITIAL_BACKOFF
                    self._emit(ExternalChange.everything_lost())
                try:
                    for notify in conn.notifies(timeout=_POLL_TIMEOUT):
                        self._dispatch(notify.payload)
                        if stop.is_set():
                            break
                except Exception as exc:
                    if isinstance(exc, psycopg.Error):
                        logger.warning("PostgreSQL listener lost its connection (%s); "
                                       "reconnecting", str(exc).strip() or type(exc).__name__)
                    else:
                        logger.exception("PostgreSQL listener failed; reconnecting")
                    _close_quietly(conn)
                    conn = None
                    stop.wait(backoff)
                    backoff = min(backoff * 2, self._backoff_cap)
        finally:
            if conn is not None:
                _close_quietly(conn)

    def _dispatch(self, payload: str) -> None:
        try:
            change = parse_payload(payload)
        except ValueError as exc:
            logger.warning("PostgreSQL listener skipped a notification on %r: %s",
                           self._channel, exc)
            return
        self._emit(change)

    def _emit(self, change: ExternalChange) -> None:
        try:
            self._on_change(change)
        except Exception:
            logger.exception("on_change failed for %r", change)


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except Exception:
        logger.debug("closing the listener connection failed", exc_info=True)
