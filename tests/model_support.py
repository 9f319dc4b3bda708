"""Helpers of the model-based test (tests/test_model_based.py): the schema, a planner that
turns drawn operations into valid writes, ORM models, frame comparison and a private
redis-server that can be restarted empty, with its data, or from an older snapshot.

Nothing here knows reactive_nb's internals: the oracle is the database itself, read with
a plain SQLAlchemy engine that reactive_nb never hooked.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import math
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, ForeignKey, Integer, String, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tests.conftest import delete_prefix

# --------------------------------------------------------------------------- schema

#: Organizations a step may name; a tenant is an organization. "initech" starts absent.
ORGS = ("acme", "globex", "initech")
NAMES = ("ann", "bob", "cy", "dee")
STATUSES = ("active", "away")

_TABLES = """
CREATE TABLE organization (id TEXT PRIMARY KEY);
CREATE TABLE agent (
    id INTEGER PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organization(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    status TEXT NOT NULL);
CREATE TABLE message (
    id INTEGER PRIMARY KEY,
    organization_id TEXT NOT NULL,
    from_agent_id INTEGER NOT NULL REFERENCES agent(id) ON DELETE CASCADE,
    body TEXT);
CREATE VIEW active_agent AS
    SELECT id, organization_id, name, status FROM agent WHERE status = 'active';
"""

#: PostgreSQL only: a volatile PL/pgSQL function that writes, and the probe table whose
#: trigger notification tells that every earlier notification was handled (NOTIFYs are
#: delivered in commit order).
_POSTGRES_EXTRA = """
CREATE FUNCTION add_agent(org TEXT, agent_name TEXT) RETURNS INTEGER
LANGUAGE plpgsql VOLATILE AS $$
DECLARE new_id INTEGER;
BEGIN
    SELECT COALESCE(MAX(id), 0) + 1 INTO new_id FROM agent;
    INSERT INTO agent (id, organization_id, name, status)
        VALUES (new_id, org, agent_name, 'active');
    RETURN new_id;
END $$;
CREATE TABLE probe (id SERIAL PRIMARY KEY);
"""

SEED = [
    "INSERT INTO organization (id) VALUES ('acme'), ('globex')",
    """INSERT INTO agent (id, organization_id, name, status) VALUES
        (1, 'acme', 'ann', 'active'), (2, 'acme', 'bob', 'away'),
        (3, 'globex', 'cy', 'active')""",
    """INSERT INTO message (id, organization_id, from_agent_id, body) VALUES
        (1, 'acme', 1, 'hi'), (2, 'globex', 3, 'yo')""",
]


def statements(script: str) -> list[str]:
    """Split a schema script on the semicolons that end a statement (not inside $$)."""
    parts, current, quoted = [], [], False
    for line in script.strip().splitlines():
        quoted ^= line.count("$$") % 2 == 1
        current.append(line)
        if not quoted and line.rstrip().endswith(";"):
            parts.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    return parts


def plain_engine(url: str) -> Engine:
    """An engine reactive_nb never hooks (the oracle), with SQLite foreign keys enforced."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        enforce_sqlite_foreign_keys(engine)
    return engine


def enforce_sqlite_foreign_keys(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()


def create_schema(engine: Engine) -> None:
    script = _TABLES + (_POSTGRES_EXTRA if engine.dialect.name == "postgresql" else "")
    with engine.begin() as conn:
        for stmt in statements(script):
            conn.execute(text(stmt))


def reset_data(engine: Engine) -> None:
    """Empty every table and insert the seed rows (uncaptured: nobody listens yet)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE organization, agent, message, probe "
                              "RESTART IDENTITY CASCADE"))
        else:
            for table in ("message", "agent", "organization"):
                conn.execute(text(f"DELETE FROM {table}"))
        for stmt in SEED:
            conn.execute(text(stmt))


# --------------------------------------------------------------------------- functions


@dataclass(frozen=True)
class FunctionSpec:
    """A reactive function under test: its SQL and another definition of it under the same
    name (a notebook cell re-run with new SQL), declared dependencies (None: inferred),
    whether it takes the organization, and the path that must be enabled to use it."""

    name: str
    sql: str
    redefined: str
    dependencies: tuple[str, ...] | None
    takes_org: bool = True
    path: str | None = None


FUNCTIONS = (
    FunctionSpec("agents_by_org",
                 "SELECT id, organization_id, name, status FROM agent "
                 "WHERE organization_id = :org ORDER BY id",
                 "SELECT id, organization_id, name, status FROM agent "
                 "WHERE organization_id = :org AND status = 'active' ORDER BY id",
                 ("agent",)),
    FunctionSpec("message_counts",
                 "SELECT a.id AS agent_id, COUNT(m.id) AS messages "
                 "FROM agent a LEFT JOIN message m ON m.from_agent_id = a.id "
                 "WHERE a.organization_id = :org GROUP BY a.id ORDER BY a.id",
                 "SELECT a.id AS agent_id, COUNT(m.id) AS messages "
                 "FROM agent a JOIN message m ON m.from_agent_id = a.id "
                 "WHERE a.organization_id = :org GROUP BY a.id ORDER BY a.id",
                 None),
    FunctionSpec("org_count", "SELECT COUNT(*) AS n FROM organization",
                 "SELECT COUNT(*) AS n FROM organization WHERE id <> 'acme'",
                 None, takes_org=False),
    FunctionSpec("active_agents",
                 "SELECT id, name FROM active_agent WHERE organization_id = :org ORDER BY id",
                 "SELECT id, name FROM active_agent WHERE organization_id = :org "
                 "AND name <> 'ann' ORDER BY id",
                 ("active_agent",), path="view_reads"),
    FunctionSpec("active_count",
                 "SELECT COUNT(*) AS n FROM active_agent WHERE organization_id = :org",
                 "SELECT COUNT(*) AS n FROM active_agent WHERE organization_id = :org "
                 "AND name <> 'ann'",
                 None, path="view_reads"),
)


def define(db: Any, spec: FunctionSpec, sql: str | None = None) -> Any:
    """Declare ``spec`` (with ``sql`` instead of its own, when given) as a reactive function
    of ``db``; the SQL is a closure constant, so each definition has its own fingerprint."""
    sql = spec.sql if sql is None else sql
    if spec.takes_org:
        def handler(org: str) -> Any:
            return db.read_sql(sql, org=org)
    else:
        def handler() -> Any:  # type: ignore[misc]
            return db.read_sql(sql)
    handler.__name__ = spec.name
    deps = list(spec.dependencies) if spec.dependencies is not None else None
    return db.reactive(name=spec.name, dependencies=deps)(handler)


#: ``echo(x)``: the value and its SQL type, so two inputs that differ only in type give
#: different frames, and a cache key that confused them would serve the wrong one.
ECHO_SQL = {"postgresql": "SELECT CAST(:x AS TEXT) AS x, pg_typeof(:x)::text AS t",
            "sqlite": "SELECT CAST(:x AS TEXT) AS x, typeof(:x) AS t"}


def echo_groups(dialect: str) -> list[list[Any]]:
    """Groups of inputs that are equal, or print alike, in Python or JSON, but are not the
    same value to the database."""
    groups: list[list[Any]] = [
        [1, 1.0, True, "1"], [0, 0.0, False, "", "0", None],
        [None, float("nan"), "null", "None"], [1.5, "1.5", "true", True],
    ]
    if dialect == "postgresql":  # (sqlite3 has no adapter for these)
        groups += [[1, decimal.Decimal("1"), "1", decimal.Decimal("1.0")],
                   [datetime.date(2024, 1, 1), "2024-01-01", datetime.datetime(2024, 1, 1),
                    "2024-01-01 00:00:00", "2024-01-01T00:00:00"]]
    return groups


def define_echo(db: Any) -> Any:
    sql = ECHO_SQL[db.engine.dialect.name]

    def echo(x: Any) -> Any:
        return db.read_sql(sql, x=x)

    return db.reactive(name="echo", dependencies=["organization"])(echo)


def fresh(engine: Engine, sql: str, inputs: Mapping[str, Any]) -> pd.DataFrame:
    """A function's SQL run now on the oracle engine."""
    with engine.connect() as conn:
        return pd.read_sql(text(sql), conn, params=dict(inputs))


def _scalar(value: Any) -> Any:
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Python scalars in object columns, rows sorted, a fresh index: so frames that hold
    the same rows compare equal whatever dtype a cache round trip chose."""
    columns = [str(c) for c in df.columns]
    rows = [tuple(_scalar(v) for v in row) for row in df.itertuples(index=False, name=None)]
    rows.sort(key=repr)
    return pd.DataFrame.from_records(rows, columns=columns).astype(object).reset_index(drop=True)


def assert_same(actual: pd.DataFrame, expected: pd.DataFrame, what: str) -> None:
    """``actual`` holds the rows ``expected`` holds (the fresh query), or AssertionError."""
    from pandas.testing import assert_frame_equal

    try:
        assert_frame_equal(normalise(actual), normalise(expected), check_dtype=False)
    except AssertionError as exc:
        raise AssertionError(f"stale or wrong result for {what}:\n"
                             f"served:\n{actual}\nfresh:\n{expected}\n{exc}") from None


# --------------------------------------------------------------------------- ORM


class Base(DeclarativeBase):
    pass


class Organization(Base):
    __tablename__ = "organization"
    id: Mapped[str] = mapped_column(String, primary_key=True)


class Agent(Base):
    __tablename__ = "agent"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id"))
    name: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)


class Message(Base):
    __tablename__ = "message"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    organization_id: Mapped[str] = mapped_column(String)
    from_agent_id: Mapped[int] = mapped_column(ForeignKey("agent.id"))
    body: Mapped[str | None] = mapped_column(String, nullable=True)


MODELS: dict[str, type[Base]] = {"organization": Organization, "agent": Agent,
                                 "message": Message}


# --------------------------------------------------------------------------- planner


@dataclass(frozen=True)
class Spec:
    """One drawn write, before it is resolved against the data: an operation name and
    choices (which existing row, which values). Invalid choices fall back to a valid op."""

    op: str
    pick: int = 0
    name: str = "ann"
    status: str = "active"

    def __repr__(self) -> str:
        return f"Spec({self.op!r}, {self.pick}, {self.name!r}, {self.status!r})"


#: Write operations; the first is what a shrunk example shows when any would do.
OPS = ("insert_agent", "update_agent", "insert_message", "delete_message", "delete_agent",
       "insert_org")


@dataclass
class Shadow:
    """The rows a plan may refer to, read from the database and advanced by each plan."""

    orgs: set[str]
    agents: dict[int, tuple[str, str, str]]  # id -> (organization_id, name, status)
    messages: dict[int, tuple[str, int]]  # id -> (organization_id, from_agent_id)
    next_agent: int
    next_message: int

    @classmethod
    def read(cls, engine: Engine, floor_agent: int = 1, floor_message: int = 1) -> Shadow:
        with engine.connect() as conn:
            orgs = {r[0] for r in conn.execute(text("SELECT id FROM organization"))}
            agents = {int(r[0]): (r[1], r[2], r[3]) for r in conn.execute(
                text("SELECT id, organization_id, name, status FROM agent"))}
            messages = {int(r[0]): (r[1], int(r[2])) for r in conn.execute(
                text("SELECT id, organization_id, from_agent_id FROM message"))}
        return cls(orgs, agents, messages,
                   max([floor_agent, *(a + 1 for a in agents)]),
                   max([floor_message, *(m + 1 for m in messages)]))

    def agents_of(self, org: str) -> list[int]:
        return sorted(i for i, a in self.agents.items() if a[0] == org)

    def messages_of(self, org: str) -> list[int]:
        return sorted(i for i, m in self.messages.items() if m[0] == org)

    def leaves_of(self, org: str) -> list[int]:
        used = {m[1] for m in self.messages.values()}
        return [i for i in self.agents_of(org) if i not in used]


@dataclass(frozen=True)
class Plan:
    """One resolved write: SQL with ``:name`` parameters, plus what the ORM and
    ``to_sql`` paths need (the table, the row for inserts, the key for updates/deletes)."""

    op: str
    table: str
    sql: str
    params: dict[str, Any] = field(default_factory=dict)
    row: dict[str, Any] | None = None
    key: Any = None


def plan(shadow: Shadow, org: str, spec: Spec) -> Plan:
    """Resolve ``spec`` within organization ``org`` and advance ``shadow`` past it."""
    op = spec.op
    if org not in shadow.orgs:
        op = "insert_org"
    if op == "insert_org":
        if org in shadow.orgs:
            return plan(shadow, org, Spec("insert_agent", spec.pick, spec.name, spec.status))
        shadow.orgs.add(org)
        return Plan(op, "organization", "INSERT INTO organization (id) VALUES (:id)",
                    {"id": org}, row={"id": org})
    if op == "insert_agent":
        new = shadow.next_agent
        shadow.next_agent += 1
        shadow.agents[new] = (org, spec.name, spec.status)
        row = {"id": new, "organization_id": org, "name": spec.name, "status": spec.status}
        return Plan(op, "agent", "INSERT INTO agent (id, organization_id, name, status) "
                    "VALUES (:id, :organization_id, :name, :status)", row, row=row)
    if op == "update_agent":
        agents = shadow.agents_of(org)
        if not agents:
            return plan(shadow, org, Spec("insert_agent", spec.pick, spec.name, spec.status))
        target = agents[spec.pick % len(agents)]
        shadow.agents[target] = (org, spec.name, spec.status)
        return Plan(op, "agent", "UPDATE agent SET name = :name, status = :status "
                    "WHERE id = :id", {"id": target, "name": spec.name,
                                       "status": spec.status}, key=target)
    if op == "insert_message":
        agents = shadow.agents_of(org)
        if not agents:
            return plan(shadow, org, Spec("insert_agent", spec.pick, spec.name, spec.status))
        sender = agents[spec.pick % len(agents)] if spec.pick >= 0 else agents[-1]
        new = shadow.next_message
        shadow.next_message += 1
        shadow.messages[new] = (org, sender)
        row = {"id": new, "organization_id": org, "from_agent_id": sender,
               "body": f"{spec.name} says {spec.status}"}
        return Plan(op, "message", "INSERT INTO message (id, organization_id, from_agent_id, "
                    "body) VALUES (:id, :organization_id, :from_agent_id, :body)", row, row=row)
    if op == "delete_message":
        messages = shadow.messages_of(org)
        if not messages:
            return plan(shadow, org, Spec("insert_message", spec.pick, spec.name, spec.status))
        target = messages[spec.pick % len(messages)]
        del shadow.messages[target]
        return Plan(op, "message", "DELETE FROM message WHERE id = :id", {"id": target},
                    key=target)
    if op == "delete_agent":  # only agents without messages: no cascade on this path
        leaves = shadow.leaves_of(org)
        if not leaves:
            return plan(shadow, org, Spec("update_agent", spec.pick, spec.name, spec.status))
        target = leaves[spec.pick % len(leaves)]
        del shadow.agents[target]
        return Plan(op, "agent", "DELETE FROM agent WHERE id = :id", {"id": target},
                    key=target)
    raise ValueError(f"unknown op {op!r}")


def plans(shadow: Shadow, org: str, specs: Iterable[Spec]) -> list[Plan]:
    return [plan(shadow, org, s) for s in specs]


def literal_sql(p: Plan) -> str:
    """The plan's SQL with its parameters inlined (values come from fixed alphabets)."""

    def value(match: re.Match[str]) -> str:
        v = p.params[match.group(1)]
        if isinstance(v, int):
            return str(v)
        return "'" + str(v).replace("'", "''") + "'"

    return re.sub(r"(?<!:):(\w+)", value, p.sql)


def pyformat_sql(sql: str) -> str:
    """``:name`` placeholders as psycopg's ``%(name)s``."""
    return re.sub(r"(?<!:):(\w+)", r"%(\1)s", sql)


def apply_orm(session: Any, p: Plan) -> None:
    """Do what the plan does through the ORM unit of work."""
    model = MODELS[p.table]
    if p.row is not None:
        session.add(model(**p.row))
    elif p.op.startswith("delete"):
        session.delete(session.get(model, p.key))
    else:
        obj = session.get(model, p.key)
        for name, value in p.params.items():
            if name != "id":
                setattr(obj, name, value)


def table_contents(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the three tables, for "nothing changed" checks."""
    out = {}
    with engine.connect() as conn:
        for table in ("organization", "agent", "message"):
            out[table] = sorted(tuple(r) for r in conn.execute(
                text(f"SELECT * FROM {table} ORDER BY 1")))
    return out


# --------------------------------------------------------------------------- Redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of the test's own (``--save '' --appendonly no``) that can be stopped
    and restarted: empty, with the data it had (an explicit SAVE before stopping), or from
    an older snapshot (a copy of an earlier SAVE). Clients reach it through ``url``, a
    ``Partition`` proxy that can also cut the network while the server keeps running."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("redis-server") is None:
            raise FileNotFoundError("redis-server")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.partition = Partition(self.port)

    @property
    def url(self) -> str:
        """Where clients connect: through the partition proxy."""
        return self.partition.url

    @property
    def dump(self) -> Path:
        return self.dir / "dump.rdb"

    @property
    def snapshot_file(self) -> Path:
        return self.dir / "snapshot.rdb"

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=5)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir),
             "--dbfilename", self.dump.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = self.client()
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise
                    threading.Event().wait(0.01)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        """Stop the server and the proxy (end of the test)."""
        self.stop()
        self.partition.close()

    @property
    def running(self) -> bool:
        return self.proc is not None

    def save(self) -> None:
        client = self.client()
        try:
            client.save()
        finally:
            client.close()

    def forget(self) -> None:
        """No dump and no snapshot: the next start is empty."""
        self.dump.unlink(missing_ok=True)
        self.snapshot_file.unlink(missing_ok=True)

    def restart_empty(self) -> None:
        self.stop()
        self.dump.unlink(missing_ok=True)
        self.start()

    def take_snapshot(self) -> None:
        self.save()
        shutil.copyfile(self.dump, self.snapshot_file)

    def restart_from_snapshot(self) -> None:
        self.stop()
        shutil.copyfile(self.snapshot_file, self.dump)
        self.start()

    def delete_prefix(self, prefix: str) -> None:
        delete_prefix(self.client(), prefix)


class Partition:
    """A TCP proxy in front of a server that can cut the network: ``cut()`` closes every
    connection through it and refuses new ones until ``heal()``. The server keeps running
    (same data, same run_id): an outage that is not a restart.

    Threads are named ``model-proxy-*`` and stopped by ``close()``.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()  # guards _sockets and _cut
        self._sockets: set[socket.socket] = set()
        self._cut = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept, "accept")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _spawn(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"model-proxy-{name}",
                                  daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                refused = self._cut
            if refused:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port), 2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, server}
            self._spawn(self._pump, "pump", client, server)
            self._spawn(self._pump, "pump", server, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source, sink)

    def _close(self, *socks: socket.socket) -> None:
        for sock in socks:
            with self._lock:
                self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            open_sockets = list(self._sockets)
        self._close(*open_sockets)

    def heal(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)
