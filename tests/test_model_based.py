"""Model-based differential test of the central promise: a lost change event costs
latency, never a stale read.

A hypothesis ``RuleBasedStateMachine`` runs against real services and writes through
every path reactive_nb captures: ``db.execute``, multi-statement strings, the ORM,
``DataFrame.to_sql``, rollbacks (whole, savepoint, ORM), other clients' transactions
through PostgreSQL triggers, updates through a view, cascading deletes, a volatile
PL/pgSQL function, TRUNCATE, as tenants and unscoped. It reads through cached calls and
live queries (opened and closed at random), redefines functions under the same name,
calls a function with inputs that differ only in type, and injects faults: Redis restarted
empty, restarted after an outage, restarted from an older snapshot, cut off by the network
without a restart, and the trigger listener's connection killed while a write commits.

The oracle is the database itself. After every step, every cached call made so far is
made again and every live query that says it is fresh is compared with the same SQL run
on a plain SQLAlchemy engine that reactive_nb never hooked; the ``settle`` rule (or, in
half the runs, every step) runs all due refreshes and then requires every live query to
be fresh and equal. Writes by other clients are settled by waiting for a probe's NOTIFY
(notifications arrive in commit order), never by sleeping.

Variants: (a) a SQLite file with memory stores, (b) PostgreSQL with memory stores, (c)
PostgreSQL with a private Redis, triggers, other clients' writes and the faults.
Paths are switched by ``ENABLED_PATHS`` (a path with a known hole goes to
``PENDING_PATHS``, with its shrunk failing example). To try other paths without editing
this file: ``REACTIVE_NB_MODEL_PATHS=execute,cascade_delete python -m pytest ...``. Deeper
runs: ``--hypothesis-profile soak`` (see tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import psycopg
import pytest
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, text

import reactive_nb as rnb
from reactive_nb.events import DEFAULT_TENANT
from tests.conftest import REQUIRE
from tests.model_support import (
    ECHO_SQL,
    FUNCTIONS,
    NAMES,
    OPS,
    ORGS,
    STATUSES,
    FunctionSpec,
    Plan,
    PrivateRedis,
    Shadow,
    Spec,
    apply_orm,
    assert_same,
    create_schema,
    define,
    define_echo,
    echo_groups,
    enforce_sqlite_foreign_keys,
    fresh,
    literal_sql,
    plain_engine,
    plans,
    pyformat_sql,
    reset_data,
    table_contents,
)
from tests.serving import wait_for

# --------------------------------------------------------------------------- paths

#: Write paths, read features and faults the machine runs with. Each one passed alone
#: (with ``execute`` for the modifiers and faults) and all together, at 30-200 examples of
#: 15-30 steps, on 2026-11-30 around noon; each one was also shown able to fail by
#: re-opening its hole by hand in a scratch process (e.g. views not resolved to their base
#: tables: open live active_agents(acme) as acme, settle, INSERT an acme agent as acme ->
#: "stale or wrong result for live query active_agents", status fresh). The one real
#: failure met before the fixes landed was ``unscoped_reads``: live org_count() unscoped,
#: settle, INSERT organization 'initech' as tenant 'initech' -> the live query stayed
#: "fresh" with n=2 (the ``t@tenants`` announcement reached no unscoped group).
ENABLED_PATHS: frozenset[str] = frozenset({
    "second_kernel",  # a second kernel on the same database and Redis (its first call a hit)
    "execute",  # db.execute: one statement in its own transaction
    "orm",  # db.session(): add / modify / delete, commit
    "to_sql",  # DataFrame.to_sql(..., db.engine, if_exists="append")
    "rollback",  # rolled-back transaction, rolled-back savepoint, ORM rollback
    "multi_statement",  # db.execute("stmt; stmt; ...") (PostgreSQL)
    "redefine",  # a function redefined under the same name (same cache keys)
    "cache_keys",  # inputs equal in Python or JSON but of other types (1, 1.0, True, "1")
    "truncate",  # TRUNCATE [CASCADE], unscoped by nature (PostgreSQL)
    "unscoped_writes",  # writes outside any tenant while tenants hold results
    "unscoped_reads",  # reads outside any tenant (the unscoped view) while tenants write
    "external_txn",  # another client's transaction over several tables (triggers)
    "view_reads",  # functions reading the view active_agent (declared or inferred)
    "view_update",  # UPDATE through the updatable view active_agent (PostgreSQL)
    "cascade_delete",  # DELETE of a parent whose children go by ON DELETE CASCADE
    "volatile_function",  # SELECT add_agent(...): a PL/pgSQL function that writes
    "redis_restart_empty",  # Redis restarted without its data
    "redis_outage",  # Redis stopped during writes, restarted with its data
    "redis_partition",  # the network to Redis cut during writes (no restart), then healed
    "redis_old_snapshot",  # Redis restarted from an older snapshot
    "listener_kill",  # pg_terminate_backend on the trigger listener's connection
})

#: Paths with a known hole, each with the minimal failing example hypothesis shrank to.
PENDING_PATHS: frozenset[str] = frozenset()

ALL_PATHS = ENABLED_PATHS | PENDING_PATHS


def active_paths() -> frozenset[str]:
    """ENABLED_PATHS, or the comma-separated REACTIVE_NB_MODEL_PATHS when set."""
    chosen = os.environ.get("REACTIVE_NB_MODEL_PATHS")
    if chosen is None:
        return ENABLED_PATHS
    names = frozenset(p.strip() for p in chosen.split(",") if p.strip())
    unknown = names - ALL_PATHS
    if unknown:
        raise ValueError(f"unknown paths {sorted(unknown)}; known: {sorted(ALL_PATHS)}")
    return names


# --------------------------------------------------------------------------- strategies

orgs = st.sampled_from(ORGS)
specs = st.builds(Spec, op=st.sampled_from(OPS), pick=st.integers(0, 5),
                  name=st.sampled_from(NAMES), status=st.sampled_from(STATUSES))
SYNC_TIMEOUT = 15.0
MAX_LIVE = 6


class ReactiveMachine(RuleBasedStateMachine):
    """Base machine; a variant names its backend, what it supports and its stores."""

    #: Paths this backend can exercise at all.
    SUPPORTED: ClassVar[frozenset[str]] = frozenset()
    #: Connect with triggers installed (external writes are captured by the listener).
    TRIGGERS: ClassVar[bool] = False

    def __init__(self, url: str, redis_server: PrivateRedis | None = None) -> None:
        super().__init__()
        counted = os.environ.get("REACTIVE_NB_MODEL_COUNT")
        if counted:  # benchmarks/bench_model.py counts the examples run
            with open(counted, "a") as log:
                log.write("1\n")
        self.paths = active_paths() & self.SUPPORTED
        self.specs = {s.name: s for s in FUNCTIONS}
        self.url = url
        self.plain = plain_engine(url)
        reset_data(self.plain)
        self.redis_server = redis_server
        self.prefix = f"rnbmodel-{uuid.uuid4().hex[:10]}"
        options: dict[str, Any] = {"workers": 0, "min_interval": 0.0}
        if redis_server is not None:
            redis_server.forget()
            if not redis_server.running:
                redis_server.start()
            options.update(redis=redis_server.url, key_prefix=self.prefix)
        if self.TRIGGERS:
            options["tenant_column"] = "organization_id"
        self.options = options
        self.other: Any = None
        self.db = rnb.connect(self._engine(), **options)
        try:
            self._prepare()
        except BaseException:
            self.db.close()
            if self.other is not None:
                self.other.close()
            self.plain.dispose()
            raise

    def _prepare(self) -> None:
        """Functions, change subscription and (with triggers) the listener."""
        self.functions = {s.name: define(self.db, s) for s in FUNCTIONS
                          if s.path is None or s.path in self.paths}
        self.sql = {name: self.specs[name].sql for name in self.functions}
        if "cache_keys" in self.paths:
            self.functions["echo"] = define_echo(self.db)
            self.sql["echo"] = ECHO_SQL[self.plain.dialect.name]
            self.echo_groups = echo_groups(self.plain.dialect.name)
        # What reads may call: a function over every organization is read unscoped only.
        self.readable = sorted(s.name for s in FUNCTIONS if s.name in self.functions
                               and (s.takes_org or "unscoped_reads" in self.paths))
        # Changes seen, for the rollback check (this thread) and the trigger probes.
        self._seen = threading.Condition()
        self._local_changes: list[rnb.Change] = []
        self._probes = 0
        self._main = threading.get_ident()
        self._unsubscribe = self.db.subscribe(self._on_change)
        if self.TRIGGERS:
            self.db.install_triggers(["organization", "agent", "message", "probe"])
            assert self.db.listening
        self.other_functions: dict[str, Any] = {}
        if "second_kernel" in self.paths:
            # Another process on the same database and Redis, without a trigger listener
            # of its own: only the shared versions can tell it what the first one wrote.
            self.other = rnb.connect(self.url, **self.options, capture="local")
            self.other_functions = {s.name: define(self.other, s) for s in FUNCTIONS
                                    if s.name in self.functions}
        # Cached calls made so far: (function, inputs, tenant, through the second kernel).
        self.calls: dict[tuple[Any, ...], tuple[str, dict[str, Any], str, bool]] = {}
        # (live query, function name, inputs, tenant, the SQL of its definition)
        self.lives: list[tuple[Any, str, dict[str, Any], str, str]] = []
        self.next_agent = 1
        self.next_message = 1
        self.autosettle = False

    def _engine(self) -> Engine | str:
        return self.url

    def teardown(self) -> None:
        try:
            for live, *_ in self.lives:
                live.close()
            self._unsubscribe()
            self.db.close()
            if self.other is not None:
                self.other.close()
        finally:
            self.plain.dispose()
            server = self.redis_server
            if server is not None:
                server.partition.heal()
                if not server.running:
                    server.start()
                server.delete_prefix(self.prefix)

    # -- helpers ---------------------------------------------------------------------------

    def _on_change(self, change: rnb.Change) -> None:
        with self._seen:
            if threading.get_ident() == self._main:
                self._local_changes.append(change)
            if "probe" in change.tables and change.tenant == DEFAULT_TENANT:
                self._probes += 1
            self._seen.notify_all()

    def _sync_external(self, attempts: int = 1) -> None:
        """With triggers: wait until the listener has handled every notification committed
        so far (the probe's NOTIFY comes after them, in commit order). With several
        attempts, a probe sent while the listener was reconnecting (so lost) is resent."""
        if not self.TRIGGERS:
            return
        for attempt in range(attempts, 0, -1):
            with self._seen:
                target = self._probes + 1
            self._external(["INSERT INTO probe DEFAULT VALUES"], [{}])
            with self._seen:
                timeout = SYNC_TIMEOUT if attempt == 1 else SYNC_TIMEOUT / attempts
                if self._seen.wait_for(lambda n=target: self._probes >= n, timeout):
                    return
        raise AssertionError(f"the trigger listener handled no probe within {SYNC_TIMEOUT} s")

    def _external(self, sqls: list[str], params: list[dict[str, Any]]) -> None:
        """One transaction of another client (a plain psycopg connection)."""
        url = self.plain.url
        with psycopg.connect(host=url.host, port=url.port, user=url.username,
                             dbname=url.database) as conn:
            for sql, values in zip(sqls, params, strict=True):
                conn.execute(pyformat_sql(sql), values)

    def _shadow(self) -> Shadow:
        """The rows now in the database (ids never reused within an example)."""
        return Shadow.read(self.plain, self.next_agent, self.next_message)

    def _plans(self, shadow: Shadow, org: str, steps: list[Spec]) -> list[Plan]:
        """Resolve drawn steps against the data, noting the SQL (a shrunk example then
        says what really ran: a step whose row does not exist falls back to another)."""
        resolved = plans(shadow, org, steps)
        for p in resolved:
            note(f"  {literal_sql(p)}")
        return resolved

    def _advance(self, shadow: Shadow) -> None:
        self.next_agent, self.next_message = shadow.next_agent, shadow.next_message

    def _scope(self, org: str, unscoped: bool) -> Any:
        """The tenant scope of a write: the organization it touches, or none (only when
        unscoped writes are enabled)."""
        if unscoped and "unscoped_writes" in self.paths:
            note("  (unscoped write)")
            return contextlib.nullcontext()
        note(f"  (write as tenant {org!r})")
        return self.db.tenant(org)

    def _existing_org(self, org: str) -> str | None:
        existing = sorted(self._shadow().orgs)
        if org in existing:
            return org
        return existing[0] if existing else None

    def _written(self) -> None:
        self._sync_external()

    def _settle(self) -> None:
        """Run every due refresh until every live query is fresh (bounded)."""
        self._sync_external()

        def settled() -> bool:  # a change may still be delivered by another thread
            self.db.scheduler.run_until_idle()
            return all(live.status == "fresh" for live, *_ in self.lives)

        wait_for(settled, SYNC_TIMEOUT, every=0.005)
        waiting = [live for live, *_ in self.lives if live.status != "fresh"]
        assert not waiting, ("live queries not fresh after settling: "
                             f"{[(live, live.error) for live in waiting]}")

    def _inputs(self, spec: FunctionSpec, org: str, unscoped: bool) -> tuple[dict[str, Any], str]:
        """Inputs and tenant of a read: a tenant reads its own organization only; a
        function over every organization is read unscoped."""
        inputs = {"org": org} if spec.takes_org else {}
        scoped = spec.takes_org and not (unscoped and "unscoped_reads" in self.paths)
        return inputs, org if scoped else DEFAULT_TENANT

    def _remember(self, name: str, inputs: dict[str, Any], tenant: str,
                  other: bool = False) -> None:
        """A cached call to re-make after every step from now on."""
        key = (name, repr(sorted(inputs.items())), tenant, other)
        self.calls[key] = (name, inputs, tenant, other)

    def _check_call(self, name: str, inputs: dict[str, Any], tenant: str,
                    other: bool = False) -> None:
        """Make the cached call (through the second kernel: with the original definition)
        and compare it with the same SQL run fresh."""
        db, fn, sql = ((self.other, self.other_functions[name], self.specs[name].sql) if other
                       else (self.db, self.functions[name], self.sql[name]))
        with contextlib.nullcontext() if tenant == DEFAULT_TENANT else db.tenant(tenant):
            served = fn(**inputs)
        where = " in the second kernel" if other else ""
        assert_same(served, fresh(self.plain, sql, inputs),
                    f"cached call {name}({inputs}) as {tenant!r}{where}")

    # -- writes ----------------------------------------------------------------------------

    @precondition(lambda self: "execute" in self.paths)
    @rule(org=orgs, spec=specs, unscoped=st.booleans())
    def write_execute(self, org: str, spec: Spec, unscoped: bool) -> None:
        shadow = self._shadow()
        (p,) = self._plans(shadow, org, [spec])
        with self._scope(org, unscoped):
            self.db.execute(p.sql, **p.params)
        self._advance(shadow)
        self._written()

    @precondition(lambda self: "multi_statement" in self.paths)
    @rule(org=orgs, steps=st.lists(specs, min_size=2, max_size=3), unscoped=st.booleans())
    def write_multi_statement(self, org: str, steps: list[Spec], unscoped: bool) -> None:
        shadow = self._shadow()
        sql = ";\n".join(literal_sql(p) for p in self._plans(shadow, org, steps))
        with self._scope(org, unscoped):
            self.db.execute(sql)
        self._advance(shadow)
        self._written()

    @precondition(lambda self: "orm" in self.paths)
    @rule(org=orgs, steps=st.lists(specs, min_size=1, max_size=3), unscoped=st.booleans())
    def write_orm(self, org: str, steps: list[Spec], unscoped: bool) -> None:
        shadow = self._shadow()
        with self._scope(org, unscoped), self.db.session() as session:
            for p in self._plans(shadow, org, steps):
                apply_orm(session, p)
                session.flush()  # in plan order: the unit of work would reorder
            session.commit()
        self._advance(shadow)
        self._written()

    @precondition(lambda self: "to_sql" in self.paths)
    @rule(org=orgs, op=st.sampled_from(["insert_agent", "insert_message"]),
          count=st.integers(1, 3), name=st.sampled_from(NAMES),
          status=st.sampled_from(STATUSES), unscoped=st.booleans())
    def write_to_sql(self, org: str, op: str, count: int, name: str, status: str,
                     unscoped: bool) -> None:
        shadow = self._shadow()
        first = plans(shadow, org, [Spec(op, 0, name, status)])[0]
        batch: list[Plan] = [first]
        while len(batch) < count:  # rows of one table (the first may have fallen back)
            more = plans(shadow, org, [Spec(op, len(batch), name, status)])[0]
            if more.table != first.table:
                break
            batch.append(more)
        frame = pd.DataFrame([p.row for p in batch])
        note(f"  to_sql({first.table!r}): {frame.to_dict('records')}")
        with self._scope(org, unscoped):
            frame.to_sql(first.table, self.db.engine, if_exists="append", index=False)
        self._advance(shadow)
        self._written()

    @precondition(lambda self: "rollback" in self.paths)
    @rule(org=orgs, steps=st.lists(specs, min_size=1, max_size=2),
          mode=st.sampled_from(["connection", "session", "savepoint"]), unscoped=st.booleans())
    def write_rollback(self, org: str, steps: list[Spec], mode: str, unscoped: bool) -> None:
        shadow = self._shadow()
        before = table_contents(self.plain)
        with self._seen:
            published = len(self._local_changes)
        if mode == "savepoint":  # the first step commits, the others roll back
            kept, *undone = self._plans(shadow, org, steps)
            self._advance(shadow)
            with self._scope(org, unscoped), self.db.engine.begin() as conn:
                conn.execute(text(kept.sql), kept.params)
                nested = conn.begin_nested()
                for p in undone:
                    conn.execute(text(p.sql), p.params)
                nested.rollback()
            self._written()
            return
        if mode == "session":
            with self._scope(org, unscoped), self.db.session() as session:
                for p in self._plans(shadow, org, steps):
                    apply_orm(session, p)
                    session.flush()
                session.rollback()
        else:
            with self._scope(org, unscoped), self.db.engine.connect() as conn:
                for p in self._plans(shadow, org, steps):
                    conn.execute(text(p.sql), p.params)
                conn.rollback()
        assert table_contents(self.plain) == before
        with self._seen:
            extra = self._local_changes[published:]
        assert not extra, f"a rolled-back transaction published {extra}"

    @precondition(lambda self: "external_txn" in self.paths)
    @rule(steps=st.lists(st.tuples(orgs, specs), min_size=1, max_size=4),
          new_agent=st.sampled_from([None, *ORGS]))
    def write_external(self, steps: list[tuple[str, Spec]], new_agent: str | None) -> None:
        """Another client's transaction: statements on several tables, in any order, of
        one or several organizations (the triggers report the rows' tenants), and
        optionally ends with INSERT agent + INSERT message from that new agent."""
        shadow = self._shadow()
        done = [p for org, spec in steps for p in self._plans(shadow, org, [spec])]
        if new_agent is not None:
            done += self._plans(shadow, new_agent, [Spec("insert_agent", 0, "eve", "active"),
                                              Spec("insert_message", -1, "eve")])
        self._external([p.sql for p in done], [p.params for p in done])
        self._advance(shadow)
        self._written()

    @precondition(lambda self: "view_update" in self.paths)
    @rule(org=orgs, pick=st.integers(0, 5), name=st.sampled_from(NAMES),
          status=st.sampled_from(STATUSES), unscoped=st.booleans())
    def write_view_update(self, org: str, pick: int, name: str, status: str,
                          unscoped: bool) -> None:
        shadow = self._shadow()
        active = [i for i in shadow.agents_of(org) if shadow.agents[i][2] == "active"]
        with self._scope(org, unscoped):
            if active:
                self.db.execute("UPDATE active_agent SET name = :name, status = :status "
                                "WHERE id = :id", name=name, status=status,
                                id=active[pick % len(active)])
            else:
                self.db.execute("UPDATE active_agent SET name = :name "
                                "WHERE organization_id = :org", name=name, org=org)
        self._written()

    @precondition(lambda self: "cascade_delete" in self.paths)
    @rule(org=orgs, parent=st.sampled_from(["organization", "agent"]),
          pick=st.integers(0, 5), unscoped=st.booleans())
    def write_cascade_delete(self, org: str, parent: str, pick: int, unscoped: bool) -> None:
        chosen = self._existing_org(org)
        if chosen is None:
            return
        shadow = self._shadow()
        senders = sorted({m[1] for m in shadow.messages.values()
                          if shadow.agents[m[1]][0] == chosen})
        with self._scope(chosen, unscoped):
            if parent == "agent" and senders:  # its messages go with it
                self.db.execute("DELETE FROM agent WHERE id = :id",
                                id=senders[pick % len(senders)])
            else:  # its agents go with it, and their messages with them
                self.db.execute("DELETE FROM organization WHERE id = :id", id=chosen)
        self._written()

    @precondition(lambda self: "truncate" in self.paths)
    @rule(statement=st.sampled_from(["TRUNCATE message", "TRUNCATE agent CASCADE",
                                     "TRUNCATE organization CASCADE"]))
    def write_truncate(self, statement: str) -> None:
        """TRUNCATE counts as a write (with CASCADE, of the tables it reaches); it empties
        every tenant's rows, so it is an unscoped write by nature."""
        self.db.execute(statement)
        self._written()

    @precondition(lambda self: "volatile_function" in self.paths)
    @rule(org=orgs, name=st.sampled_from(NAMES), unscoped=st.booleans())
    def write_volatile_function(self, org: str, name: str, unscoped: bool) -> None:
        chosen = self._existing_org(org)
        if chosen is None:
            return
        with self._scope(chosen, unscoped):
            self.db.execute("SELECT add_agent(:org, :name)", org=chosen, name=name)
        self._written()

    # -- reads -----------------------------------------------------------------------------

    @rule(data=st.data(), org=orgs, unscoped=st.booleans())
    def read_cached(self, data: st.DataObject, org: str, unscoped: bool) -> None:
        name = data.draw(st.sampled_from(self.readable), label="function")
        inputs, tenant = self._inputs(self.specs[name], org, unscoped)
        note(f"  (read {name}({inputs}) as tenant {tenant!r})")
        self._remember(name, inputs, tenant)
        self._check_call(name, inputs, tenant)

    @precondition(lambda self: "second_kernel" in self.paths)
    @rule(data=st.data(), org=orgs, unscoped=st.booleans())
    def read_second_kernel(self, data: st.DataObject, org: str, unscoped: bool) -> None:
        """A cached call in another kernel sharing the database and Redis: it serves what
        the first one cached, under the shared versions, with no change event needed."""
        name = data.draw(st.sampled_from(self.readable), label="function")
        inputs, tenant = self._inputs(self.specs[name], org, unscoped)
        note(f"  (read {name}({inputs}) as tenant {tenant!r} in the second kernel)")
        self._remember(name, inputs, tenant, other=True)
        self._check_call(name, inputs, tenant, other=True)

    @precondition(lambda self: "cache_keys" in self.paths)
    @rule(data=st.data())
    def read_echo(self, data: st.DataObject) -> None:
        """Cached calls whose inputs differ only in type (1, 1.0, True, "1", Decimal("1")
        ...), one after the other: none may be served another one's frame."""
        group = data.draw(st.sampled_from(self.echo_groups).flatmap(st.permutations),
                          label="inputs")
        for value in group:
            self._remember("echo", {"x": value}, DEFAULT_TENANT)
            self._check_call("echo", {"x": value}, DEFAULT_TENANT)

    @precondition(lambda self: len(self.lives) < MAX_LIVE)
    @rule(data=st.data(), org=orgs, unscoped=st.booleans())
    def open_live(self, data: st.DataObject, org: str, unscoped: bool) -> None:
        name = data.draw(st.sampled_from(self.readable), label="function")
        inputs, tenant = self._inputs(self.specs[name], org, unscoped)
        note(f"  (live {name}({inputs}) as tenant {tenant!r})")
        live = self.functions[name].live(inputs, tenant=tenant)
        self.lives.append((live, name, inputs, tenant, self.sql[name]))

    @precondition(lambda self: bool(self.lives))
    @rule(pick=st.integers(0, MAX_LIVE - 1))
    def close_live(self, pick: int) -> None:
        live, *_ = self.lives.pop(pick % len(self.lives))
        live.close()

    @precondition(lambda self: "redefine" in self.paths)
    @rule(data=st.data())
    def redefine(self, data: st.DataObject) -> None:
        """Re-run the "cell" of a function with its other SQL, under the same name: the
        new definition must never serve the old one's cached results (same cache key).
        Live queries made from the old definition keep it."""
        name = data.draw(st.sampled_from(sorted(self.specs.keys() & self.functions.keys())),
                         label="function")
        spec = self.specs[name]
        self.sql[name] = spec.redefined if self.sql[name] == spec.sql else spec.sql
        self.functions[name] = define(self.db, spec, self.sql[name])

    @rule()
    def settle(self) -> None:
        self._settle()
        for live, name, inputs, tenant, sql in self.lives:
            assert_same(live.df, fresh(self.plain, sql, inputs),
                        f"settled live query {name}({inputs}) as {tenant!r}")

    # -- the invariant ---------------------------------------------------------------------

    @initialize(autosettle=st.booleans(), warm=st.booleans())
    def start(self, autosettle: bool, warm: bool) -> None:
        """``autosettle``: settle after every step, so every live query is fresh when the
        next write comes and a missed invalidation shows at once; otherwise only in the
        ``settle`` rule, so changes pile up on stale and queued live queries.
        ``warm``: begin with every function cached for every organization (as its tenant,
        and unscoped; in both kernels), so any write or fault meets cached results;
        otherwise begin cold, with inferred functions that have never run."""
        self.autosettle = autosettle
        if warm:
            for name in self.readable:
                for org in ORGS:
                    for unscoped in (False, True):
                        inputs, tenant = self._inputs(self.specs[name], org, unscoped)
                        self._remember(name, inputs, tenant)
                        # made here, so the second kernel's first calls are cache hits
                        self._check_call(name, inputs, tenant)
                        if self.other is not None:
                            self._remember(name, inputs, tenant, other=True)

    @invariant()
    def served_results_are_fresh(self) -> None:
        """Every cached call, re-made now, and every live query that says it is fresh,
        equals the same SQL run fresh."""
        calls = list(self.calls.values())
        mine = [(name, inputs, tenant) for name, inputs, tenant, other in calls if not other]
        if self.other is not None:
            if self.db.health.down:  # this kernel first, while it must serve uncached
                for name, inputs, tenant in mine:
                    self._check_call(name, inputs, tenant)
                self._await_replay()
            # The second kernel before this one re-caches: it must not need that.
            for name, inputs, tenant, other in calls:
                if other:
                    self._check_call(name, inputs, tenant, other=True)
        for name, inputs, tenant in mine:
            self._check_call(name, inputs, tenant)
        for live, name, inputs, tenant, sql in self.lives:
            df, status, *_ = live.snapshot()
            if status == "fresh":
                assert_same(df, fresh(self.plain, sql, inputs),
                            f"live query {name}({inputs}) as {tenant!r}, status fresh")
        if self.autosettle:
            self.settle()

    def _await_replay(self) -> None:
        """Settle for the second kernel: the first one's version bumps that failed while
        Redis was unreachable are replayed by its probing thread once Redis answers again.
        Until then no other process can know of those writes (a known window: the writer
        alone refuses its cache meanwhile), so the second kernel is checked after it."""
        wait_for(lambda: not self.db.health.down, SYNC_TIMEOUT)
        assert not self.db.health.down, f"Redis not trusted again after {SYNC_TIMEOUT} s"


class SqliteMachine(ReactiveMachine):
    """(a) A SQLite file, memory stores, writes by this process only."""

    SUPPORTED = frozenset({"execute", "orm", "to_sql", "rollback", "cascade_delete",
                           "unscoped_writes", "unscoped_reads", "view_reads", "redefine",
                           "cache_keys"})

    def _engine(self) -> Engine | str:
        from sqlalchemy import create_engine

        engine = create_engine(self.url)
        enforce_sqlite_foreign_keys(engine)
        return engine

    def teardown(self) -> None:
        engine = self.db.engine
        try:
            super().teardown()
        finally:
            engine.dispose()


class PostgresMachine(ReactiveMachine):
    """(b) PostgreSQL, memory stores, writes by this process only."""

    SUPPORTED = frozenset({"execute", "orm", "to_sql", "rollback", "cascade_delete",
                           "unscoped_writes", "unscoped_reads", "view_reads", "redefine",
                           "cache_keys", "multi_statement", "view_update", "truncate",
                           "volatile_function"})


class PostgresRedisMachine(ReactiveMachine):
    """(c) PostgreSQL + a private Redis + triggers: other clients' transactions, Redis
    restarts and outages, the trigger listener's connection killed."""

    SUPPORTED = PostgresMachine.SUPPORTED | {"external_txn", "redis_restart_empty",
                                             "redis_outage", "redis_partition",
                                             "redis_old_snapshot", "listener_kill",
                                             "second_kernel"}
    TRIGGERS = True

    @property
    def server(self) -> PrivateRedis:
        assert self.redis_server is not None
        return self.redis_server

    @precondition(lambda self: "redis_restart_empty" in self.paths)
    @rule()
    def redis_restart_empty(self) -> None:
        self.server.restart_empty()

    def _write_steps(self, org: str, steps: list[Spec], unscoped: bool) -> None:
        """Writes made during a fault: one ``db.execute`` per step."""
        for step in steps:
            shadow = self._shadow()
            (p,) = self._plans(shadow, org, [step])
            with self._scope(org, unscoped):
                self.db.execute(p.sql, **p.params)
            self._advance(shadow)
        self._sync_external()

    @precondition(lambda self: "redis_outage" in self.paths)
    @rule(org=orgs, steps=st.lists(specs, min_size=1, max_size=3), unscoped=st.booleans())
    def redis_outage(self, org: str, steps: list[Spec], unscoped: bool) -> None:
        """Redis stops (its data saved) while this process only writes, then restarts
        with that data."""
        self.server.save()
        self.server.stop()
        try:
            self._write_steps(org, steps, unscoped)
        finally:
            self.server.start()

    @precondition(lambda self: "redis_partition" in self.paths)
    @rule(org=orgs, steps=st.lists(specs, min_size=1, max_size=3), unscoped=st.booleans())
    def redis_partition(self, org: str, steps: list[Spec], unscoped: bool) -> None:
        """The network to Redis is cut while this process only writes, then heals: the
        server kept running (no restart, same run_id), so the failed version bumps must
        be replayed."""
        self.server.partition.cut()
        try:
            self._write_steps(org, steps, unscoped)
        finally:
            self.server.partition.heal()

    @precondition(lambda self: "redis_old_snapshot" in self.paths)
    @rule(org=orgs, steps=st.lists(specs, min_size=1, max_size=3), unscoped=st.booleans())
    def redis_old_snapshot(self, org: str, steps: list[Spec], unscoped: bool) -> None:
        """Redis is snapshotted, this process writes, and Redis restarts from the older
        snapshot: counters and cached entries go back in time together."""
        self.server.take_snapshot()
        self._write_steps(org, steps, unscoped)
        self.server.restart_from_snapshot()

    @precondition(lambda self: "listener_kill" in self.paths)
    @rule(org=orgs, name=st.sampled_from(NAMES))
    def kill_listener(self, org: str, name: str) -> None:
        """Kill the listener's connection and, while the database refuses new connections
        (so the listener cannot be back yet), commit another client's write on a
        connection opened before: its notification is lost for good. Then let the
        listener reconnect and wait until it listens again."""
        url = self.plain.url
        shadow = self._shadow()
        done = self._plans(shadow, org, [Spec("insert_agent", 0, name, "active"),
                                   Spec("insert_message", -1, name)])
        writer = psycopg.connect(host=url.host, port=url.port, user=url.username,
                                 dbname=url.database)
        gate = f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS '
        try:
            with psycopg.connect(host=url.host, port=url.port, user=url.username,
                                 dbname="postgres", autocommit=True) as admin:
                admin.execute(gate + "false")
                try:
                    killed = admin.execute(
                        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                        "WHERE application_name = 'reactive_nb-listener' AND datname = %s",
                        [url.database]).fetchall()
                    assert killed, "no listener connection to kill"
                    with writer.transaction():
                        for p in done:
                            writer.execute(pyformat_sql(p.sql), p.params)
                finally:
                    admin.execute(gate + "true")
        finally:
            writer.close()
        self._advance(shadow)
        self._sync_external(attempts=30)


# --------------------------------------------------------------------------- the tests


def _run(factory: Any) -> None:
    """Run the machine under the loaded profile (``ci`` unless ``--hypothesis-profile``).
    One bug is shrunk and reported at a time: shrinking several costs minutes."""
    run_state_machine_as_test(factory,
                              settings=settings(_profile(), report_multiple_bugs=False))


def _profile() -> settings:
    """The profile chosen with ``--hypothesis-profile``, else ``ci`` (conftest.py)."""
    if settings.get_current_profile_name() == "default":
        return settings.get_profile("ci")
    return settings()


def _budget() -> float:
    """Seconds a machine test may take under the loaded profile: a generous second per
    step (a passing ``ci`` run takes about 20 s), plus the five minutes Hypothesis allows
    itself to shrink a failure, so a failing run reports its example instead of timing out.
    """
    current = _profile()
    return 300 + current.max_examples * current.stateful_step_count * 1.0


TIMEOUT = pytest.mark.timeout(_budget())


@pytest.fixture
def model_pg_url(pg_url: str) -> str:
    """The test's PostgreSQL database with the model's schema (reset per example)."""
    create_schema(plain := plain_engine(pg_url))
    plain.dispose()
    return pg_url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    try:
        server = PrivateRedis(tmp_path / "redis")
    except FileNotFoundError:
        reason = "redis-server binary not installed"
        if REQUIRE:
            pytest.fail(f"{reason} and REACTIVE_NB_REQUIRE_SERVICES=1")
        pytest.skip(reason)
    server.start()
    yield server
    server.close()


@TIMEOUT
def test_sqlite_memory_stores(tmp_path: Path) -> None:
    template = tmp_path / "template.db"
    engine = plain_engine(f"sqlite:///{template}")
    create_schema(engine)
    engine.dispose()
    counter = iter(range(1_000_000))

    def machine() -> SqliteMachine:
        path = tmp_path / f"model-{next(counter)}.db"
        shutil.copyfile(template, path)  # a fresh database per example, cheaply
        return SqliteMachine(f"sqlite:///{path}")

    _run(machine)


@pytest.mark.postgres
@TIMEOUT
def test_postgres_memory_stores(model_pg_url: str) -> None:
    _run(lambda: PostgresMachine(model_pg_url))


@pytest.mark.postgres
@pytest.mark.redis
@TIMEOUT
def test_postgres_redis_triggers(model_pg_url: str, private_redis: PrivateRedis) -> None:
    """(PostgreSQL is required through ``pg_url``; redis-server by ``private_redis``.)"""
    _run(lambda: PostgresRedisMachine(model_pg_url, private_redis))


def test_paths_are_partitioned() -> None:
    """Every path is either enabled or pending, never both."""
    assert not ENABLED_PATHS & PENDING_PATHS
    supported = PostgresRedisMachine.SUPPORTED | SqliteMachine.SUPPORTED
    assert supported == ALL_PATHS

