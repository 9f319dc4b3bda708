"""Reactive functions over real SQLite and PostgreSQL: caching, keys, invalidation, capture."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Annotated

import pandas as pd
import pytest
from pydantic import Field
from sqlalchemy import text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import reactive_nb as rnb
from tests.teamhub import create


class Base(DeclarativeBase):
    pass


class Audit(Base):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(primary_key=True)
    note: Mapped[str]


RELATIONS = {"agent": ["organization", "message.from_agent_id"]}


@pytest.fixture
def db(db_url: str) -> Iterator[rnb.ReactiveDB]:
    create(db_url)
    database = rnb.connect(db_url, relations=RELATIONS)
    yield database
    database.close()


class Counter:
    def __init__(self) -> None:
        self.calls = 0


def define(db: rnb.ReactiveDB) -> dict[str, tuple[rnb.ReactiveFunction, Counter]]:
    """Functions over each table, with call counters."""

    def make(table: str) -> tuple[rnb.ReactiveFunction, Counter]:
        counter = Counter()

        def handler(limit: int = 50) -> pd.DataFrame:
            counter.calls += 1
            return db.read_sql(f"SELECT * FROM {table} ORDER BY id LIMIT :limit", limit=limit)

        return db.reactive(name=f"{table}.all", dependencies=[table])(handler), counter

    return {table: make(table) for table in ("agent", "organization", "message", "tool")}


def test_call_returns_frame_and_caches(db: rnb.ReactiveDB) -> None:
    calls = Counter()

    @db.reactive(name="agents.getAll", dependencies=["agent"])
    def agents(organization_id: str, limit: int = 50) -> pd.DataFrame:
        calls.calls += 1
        return db.read_sql(
            "SELECT * FROM agent WHERE organization_id = :organization_id ORDER BY id "
            "LIMIT :limit", organization_id=organization_id, limit=limit)

    first = agents(organization_id="acme")
    assert list(first["name"]) == ["ada", "bob"]
    second = agents(organization_id="acme")
    pd.testing.assert_frame_equal(first, second)
    assert calls.calls == 1
    third = agents.execute({"organization_id": "acme"})
    assert calls.calls == 1 and len(third) == 2
    agents(organization_id="globex")
    assert calls.calls == 2
    assert agents.cache_key(organization_id="acme") == \
        'agents.getAll:{"limit":50,"organization_id":"acme"}'
    assert agents.watched == frozenset({"agent", "*"})
    stats = db.stats()
    assert stats["hits"] == 2 and stats["misses"] == 2 and stats["hit_rate"] == 0.5
    assert stats["functions"]["agents.getAll"]["runs"] == 2


def test_caller_cannot_corrupt_cache(db: rnb.ReactiveDB) -> None:
    (fn, _), = [define(db)["agent"]]
    got = fn()
    got["name"] = "overwritten"
    got.iloc[0, 0] = -1
    again = fn()
    assert list(again["name"]) == ["ada", "bob", "cy"]
    assert again.iloc[0, 0] == 1


def test_write_reruns_only_watchers(db: rnb.ReactiveDB) -> None:
    fns = define(db)
    for fn, _ in fns.values():
        fn()
    db.execute("INSERT INTO tool (id, organization_id, name) VALUES (2, 'acme', 'calc')")
    for fn, _ in fns.values():
        fn()
    calls = {table: c.calls for table, (_, c) in fns.items()}
    assert calls == {"agent": 1, "organization": 1, "message": 1, "tool": 2}
    assert len(fns["tool"][0]()) == 2


def test_relations_widen_exactly(db: rnb.ReactiveDB) -> None:
    fns = define(db)
    assert fns["organization"][0].watched == {"organization", "agent", "*"}
    assert fns["message"][0].watched == {"message", "agent", "*"}
    assert fns["agent"][0].watched == {"agent", "*"}
    assert fns["tool"][0].watched == {"tool", "*"}
    for fn, _ in fns.values():
        fn()
    db.execute("UPDATE agent SET role = 'owner' WHERE id = 1")
    for fn, _ in fns.values():
        fn()
    calls = {table: c.calls for table, (_, c) in fns.items()}
    # agent's change reaches organization and message readers; tool's readers untouched
    assert calls == {"agent": 2, "organization": 2, "message": 2, "tool": 1}
    db.execute("UPDATE organization SET name = 'ACME' WHERE id = 'acme'")
    for fn, _ in fns.values():
        fn()
    calls = {table: c.calls for table, (_, c) in fns.items()}
    # the relation is one-way: organization's change does not reach agent readers
    assert calls == {"agent": 2, "organization": 3, "message": 2, "tool": 1}


def test_unknown_relation_names_closest(db_url: str) -> None:
    create(db_url)
    with pytest.raises(rnb.RelationError, match=r"unknown table 'agnet'.*did you mean 'agent'"):
        rnb.connect(db_url, relations={"agnet": ["organization"]})
    with pytest.raises(rnb.RelationError, match=r"message\.from_agent"):
        rnb.connect(db_url, relations={"agent": ["message.from_agent"]})


def test_unknown_dependency_is_an_error(db: rnb.ReactiveDB) -> None:
    with pytest.raises(rnb.RelationError, match="did you mean 'message'"):
        db.reactive(dependencies=["mesage"])(lambda: pd.DataFrame())


def test_rollback_publishes_nothing(db: rnb.ReactiveDB) -> None:
    seen: list[rnb.Change] = []
    db.subscribe(seen.append)
    with db.engine.connect() as conn:
        conn.execute(text("INSERT INTO audit (id, note) VALUES (1, 'x')"))
        conn.rollback()
    with db.session() as session:
        session.execute(text("INSERT INTO audit (id, note) VALUES (2, 'y')"))
        session.rollback()
    with db.engine.connect() as conn:  # closed without commit: rolled back
        conn.execute(text("INSERT INTO audit (id, note) VALUES (3, 'z')"))
    assert seen == []
    assert db.versions.get("default", ["audit"]) == {"audit": 0}


def test_savepoint_rollback_drops_only_its_writes(db: rnb.ReactiveDB) -> None:
    seen: list[rnb.Change] = []
    db.subscribe(seen.append)
    with db.engine.connect() as conn:
        conn.execute(text("INSERT INTO audit (id, note) VALUES (1, 'kept')"))
        nested = conn.begin_nested()
        conn.execute(text("INSERT INTO tool (id, name) VALUES (9, 'gone')"))
        nested.rollback()
        nested = conn.begin_nested()
        conn.execute(text("INSERT INTO message (id, organization_id) VALUES (9, 'acme')"))
        nested.commit()
        assert seen == []  # nothing before the commit
        conn.commit()
    assert [c.tables for c in seen] == [frozenset({"audit", "message"})]


def test_commit_publishes_after_commit_once(db: rnb.ReactiveDB) -> None:
    seen: list[tuple[frozenset[str], int]] = []
    probe = rnb.connect(db.engine.url.render_as_string(hide_password=False), capture="none")

    def on_change(change: rnb.Change) -> None:
        # the write must already be visible to another connection when we hear of it
        count = int(probe.read_sql("SELECT COUNT(*) AS n FROM audit")["n"].iloc[0])
        seen.append((change.tables, count))

    db.subscribe(on_change)
    try:
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO audit (id, note) VALUES (1, 'a')"))
            conn.execute(text("INSERT INTO audit (id, note) VALUES (2, 'b')"))
    finally:
        probe.close()
    assert seen == [(frozenset({"audit"}), 2)]


@pytest.mark.parametrize("how", ["core", "orm", "executemany", "to_sql", "ddl", "upsert",
                                 "delete", "autocommit"])
def test_every_write_path_is_captured(db: rnb.ReactiveDB, how: str) -> None:
    check_write_path(db, how)


@pytest.mark.parametrize("how", ["multi_statement", "truncate", "writable_cte"])
def test_postgres_write_paths_are_captured(pg_url: str, how: str) -> None:
    """PostgreSQL syntax (SQLite has no TRUNCATE or writable CTEs, and runs one statement
    per execute)."""
    create(pg_url)
    with rnb.connect(pg_url, relations=RELATIONS) as db:
        check_write_path(db, how)


def check_write_path(db: rnb.ReactiveDB, how: str) -> None:
    from sqlalchemy import Column, Integer, MetaData, Table, Text, insert

    seen: list[frozenset[str]] = []
    db.subscribe(lambda change: seen.append(change.tables))
    expected = {"audit"}
    if how == "core":
        audit = Table("audit", MetaData(), Column("id", Integer), Column("note", Text))
        with db.engine.begin() as conn:
            conn.execute(insert(audit).values(id=1, note="core"))
    elif how == "orm":
        with db.session() as session:
            session.add(Audit(id=1, note="orm"))
            session.commit()
    elif how == "executemany":
        db.execute("INSERT INTO audit (id, note) VALUES (:id, :note)",
                   [{"id": i, "note": str(i)} for i in range(10)])
    elif how == "to_sql":
        pd.DataFrame({"id": [7], "note": ["pandas"]}).to_sql(
            "audit", db.engine, if_exists="append", index=False)
    elif how == "ddl":
        db.execute("CREATE TABLE scratch (id INTEGER)")
        expected = {"scratch"}
    elif how == "upsert":
        db.execute("INSERT INTO audit (id, note) VALUES (1, 'a') "
                   "ON CONFLICT (id) DO UPDATE SET note = excluded.note")
    elif how == "delete":
        db.execute("DELETE FROM agent WHERE id IN (SELECT from_agent_id FROM message)")
        expected = {"agent"}
    elif how == "autocommit":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("INSERT INTO audit (id, note) VALUES (5, 'auto')"))
            assert seen == [frozenset({"audit"})]  # published per statement, no commit call
    elif how == "multi_statement":
        db.execute("INSERT INTO audit (id, note) VALUES (1, 'a'); "
                   "UPDATE tool SET name = 'x' WHERE id = 1")
        expected = {"audit", "tool"}
    elif how == "truncate":
        db.execute("TRUNCATE audit, tool")
        expected = {"audit", "tool"}
    elif how == "writable_cte":
        db.execute("WITH moved AS (DELETE FROM message WHERE id = 1 RETURNING id, body) "
                   "INSERT INTO audit (id, note) SELECT id, body FROM moved")
        expected = {"audit", "message"}
    assert set().union(*seen) == expected


def test_unparseable_write_invalidates_everything(db: rnb.ReactiveDB,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    fns = define(db)
    for fn, _ in fns.values():
        fn()
    if db.engine.dialect.name == "sqlite":
        weird = "REINDEX agent"
    else:
        weird = "CLUSTER agent USING agent_pkey"
    with caplog.at_level(logging.WARNING):
        db.execute(weird)
    assert "every table counts as changed" in caplog.text
    for fn, _ in fns.values():
        fn()
    assert all(c.calls == 2 for _, c in fns.values())


def test_write_during_run_leaves_entry_stale(db: rnb.ReactiveDB) -> None:
    read_done, write_done = threading.Event(), threading.Event()
    calls = Counter()

    @db.reactive(dependencies=["agent"])
    def agent_count() -> pd.DataFrame:
        calls.calls += 1
        df = db.read_sql("SELECT COUNT(*) AS n FROM agent")
        if calls.calls == 1:
            read_done.set()
            assert write_done.wait(10)
        return df

    worker = threading.Thread(target=agent_count)
    worker.start()
    assert read_done.wait(10)
    db.execute("INSERT INTO agent (id, organization_id, name) VALUES (10, 'acme', 'new')")
    write_done.set()
    worker.join(10)
    assert int(agent_count()["n"].iloc[0]) == 4  # not the 3 computed before the write
    assert calls.calls == 2


def test_inferred_dependencies(db: rnb.ReactiveDB, caplog: pytest.LogCaptureFixture) -> None:
    @db.reactive
    def busy_agents(org: str) -> pd.DataFrame:
        return db.read_sql(
            "WITH counts AS (SELECT from_agent_id, COUNT(*) AS n FROM message GROUP BY 1) "
            "SELECT a.name, c.n FROM agent a JOIN counts c ON c.from_agent_id = a.id "
            "WHERE a.organization_id = :org", org=org)

    assert busy_agents.name == "busy_agents"
    assert busy_agents.dependencies == frozenset()
    busy_agents(org="acme")
    assert busy_agents.dependencies == {"agent", "message"}
    assert busy_agents.watched == {"agent", "message", "*"}
    db.execute("UPDATE message SET body = 'changed' WHERE id = 1")
    runs = busy_agents.stats.runs
    busy_agents(org="acme")
    assert busy_agents.stats.runs == runs + 1

    @db.reactive
    def constant() -> pd.DataFrame:
        return pd.DataFrame({"x": [1]})

    with caplog.at_level(logging.WARNING):
        constant()
    assert "dependencies cannot be inferred" in caplog.text


def test_bad_inputs_list_every_field(db: rnb.ReactiveDB) -> None:
    calls = Counter()

    @db.reactive(dependencies=["agent"])
    def agents(organization_id: str, limit: int = 50, since: dt.date | None = None) -> pd.DataFrame:
        calls.calls += 1
        return db.read_sql("SELECT * FROM agent WHERE organization_id = :o LIMIT :l",
                           o=organization_id, l=limit)

    with pytest.raises(rnb.InputError) as info:
        agents(limit="many", orgid="acme")
    message = str(info.value)
    assert "organization_id: missing" in message
    assert "limit: " in message and "'many'" in message
    assert "orgid: unexpected input (did you mean 'organization_id'?)" in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(rnb.InputError, match="since"):
        agents(organization_id="acme", since="not a date")
    with pytest.raises(rnb.InputError):
        agents("acme", 5, None, "too many")
    assert calls.calls == 0


def test_annotated_constraints_are_checked(db: rnb.ReactiveDB) -> None:
    """``Annotated[int, Field(ge=1)]`` is pydantic's way to bound an input: the bound holds."""
    @db.reactive(dependencies=["agent"])
    def first(limit: Annotated[int, Field(ge=1, le=100)] = 10) -> pd.DataFrame:
        return db.read_sql("SELECT * FROM agent LIMIT :l", l=limit)

    with pytest.raises(rnb.InputError, match="limit: Input should be greater than or equal to 1"):
        first(limit=0)
    with pytest.raises(rnb.InputError, match="limit: Input should be less than or equal to 100"):
        first(limit=101)
    assert len(first(limit=1)) == 1


def test_injection_strings_are_bound(db: rnb.ReactiveDB) -> None:
    @db.reactive(dependencies=["agent"])
    def agents(organization_id: str) -> pd.DataFrame:
        return db.read_sql("SELECT * FROM agent WHERE organization_id = :o", o=organization_id)

    for evil in ["acme' OR '1'='1", "acme'; DROP TABLE agent; --", "x\" OR 1=1 --"]:
        assert agents(organization_id=evil).empty
    assert len(agents(organization_id="acme")) == 2
    assert "agent" in db.tables


def test_keys_are_canonical(db: rnb.ReactiveDB) -> None:
    @db.reactive(name="k", dependencies=["agent"])
    def f(day: dt.date, amount: decimal.Decimal, ident: uuid.UUID,
          tags: list[str] | None = None) -> pd.DataFrame:
        return pd.DataFrame()

    key = f.cache_key(ident=uuid.UUID(int=1), amount=decimal.Decimal("1.50"),
                      day=dt.date(2026, 1, 2))
    assert key == ('k:{"amount":{"$decimal":"1.50"},"day":{"$date":"2026-01-02"},'
                   '"ident":{"$uuid":"00000000-0000-0000-0000-000000000001"},"tags":null}')
    assert f.cache_key(dt.date(2026, 1, 2), "1.50", str(uuid.UUID(int=1))) == key

    @db.reactive(key=lambda inputs: f"custom/{inputs['org']}", dependencies=["agent"])
    def g(org: str) -> pd.DataFrame:
        return pd.DataFrame()

    assert g.cache_key(org="acme") == "custom/acme"


def test_handler_return_types(db: rnb.ReactiveDB) -> None:
    @db.reactive(dependencies=["agent"])
    def as_records() -> list[dict[str, object]]:
        return [{"a": 1}, {"a": 2}]

    @db.reactive(dependencies=["agent"])
    def as_result() -> object:
        with db.engine.connect() as conn:
            return conn.execute(text("SELECT id, name FROM agent ORDER BY id")).freeze()()

    @db.reactive(dependencies=["agent"])
    def wrong() -> object:
        return 42

    assert list(as_records()["a"]) == [1, 2]
    assert list(as_result()["name"]) == ["ada", "bob", "cy"]
    @db.reactive(dependencies=["agent"])
    def as_mappings() -> object:
        with db.engine.connect() as conn:
            return conn.execute(text("SELECT id, name FROM agent ORDER BY id")).mappings().all()

    assert list(as_mappings()["id"]) == [1, 2, 3]
    with pytest.raises(TypeError, match="wrong returned int"):
        wrong()


def test_no_cache_and_ttl(db: rnb.ReactiveDB) -> None:
    calls = Counter()

    @db.reactive(dependencies=["agent"], cache=False)
    def uncached() -> pd.DataFrame:
        calls.calls += 1
        return db.read_sql("SELECT 1 AS x")

    uncached()
    uncached()
    assert calls.calls == 2


def test_manual_invalidate(db: rnb.ReactiveDB) -> None:
    fns = define(db)
    for fn, _ in fns.values():
        fn()
    db.invalidate("tool")
    for fn, _ in fns.values():
        fn()
    assert [c.calls for _, c in fns.values()] == [1, 1, 1, 2]
    db.invalidate()
    for fn, _ in fns.values():
        fn()
    assert [c.calls for _, c in fns.values()] == [2, 2, 2, 3]


def test_tenants_are_namespaces(db: rnb.ReactiveDB) -> None:
    fns = define(db)
    fn, counter = fns["agent"]
    with db.tenant("acme"):
        fn()
    with db.tenant("globex"):
        fn()
    db.invalidate("agent", tenant="acme")
    with db.tenant("acme"):
        fn()
    with db.tenant("globex"):
        fn()
    assert counter.calls == 3


def test_redefined_function_does_not_serve_old_results(db: rnb.ReactiveDB) -> None:
    def define(sql: str) -> rnb.ReactiveFunction:
        @db.reactive(name="cell", dependencies=["agent"])
        def cell() -> pd.DataFrame:
            return db.read_sql(sql)

        return cell

    assert list(define("SELECT id FROM agent ORDER BY id")()["id"]) == [1, 2, 3]
    again = define("SELECT id FROM agent ORDER BY id")
    again()
    assert again.stats.runs == 0  # same definition: a cache hit
    edited = define("SELECT name FROM agent ORDER BY id")
    assert list(edited()["name"]) == ["ada", "bob", "cy"]  # the edit is not served stale


def test_registered_tenants_reject_unknown_names(db_url: str) -> None:
    create(db_url)
    with rnb.connect(db_url, tenants=["acme", "globex"]) as db:
        fns = define(db)
        with db.tenant("acme"):
            assert len(fns["agent"][0]()) == 3
        unknown = r"unknown tenant 'acm' \(did you mean 'acme'\?\)"
        with pytest.raises(rnb.TenantNotFound, match=unknown), db.tenant("acm"):
            pass
        with pytest.raises(rnb.TenantNotFound):
            fns["agent"][0].live(tenant="initech")


def test_tenant_names_that_would_break_redis_keys_are_refused(db: rnb.ReactiveDB) -> None:
    fn, _ = define(db)["agent"]
    for bad in ["", "a{b", "x}"]:
        with pytest.raises(ValueError, match="invalid tenant name"), db.tenant(bad):
            pass
        with pytest.raises(ValueError, match="invalid tenant name"):
            fn.live(tenant=bad)


def test_two_reactive_dbs_on_one_engine_unhook_cleanly(db_url: str) -> None:
    from sqlalchemy import create_engine

    create(db_url)
    engine = create_engine(db_url)
    first, second = rnb.connect(engine), rnb.connect(engine)
    seen_first: list[rnb.Change] = []
    first.subscribe(seen_first.append)
    second.close()  # hooked after first: first keeps capturing
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO audit (id, note) VALUES (1, 'a')"))
    assert [c.tables for c in seen_first] == [frozenset({"audit"})]
    first.close()
    with engine.begin() as conn:  # the engine works on, uncaptured
        conn.execute(text("INSERT INTO audit (id, note) VALUES (2, 'b')"))
    assert len(seen_first) == 1
    assert not any(name in engine.dialect.__dict__ for name in ("do_execute", "do_commit"))
    engine.dispose()


def test_read_sql_sends_the_database_one_statement(db: rnb.ReactiveDB) -> None:
    """pandas.read_sql first asks the catalog whether the SQL text names a table (on
    PostgreSQL a pg_class query): every read, and every refresh, cost two statements."""
    from sqlalchemy import event

    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        sent.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        frame = db.read_sql("SELECT id, name FROM agent WHERE organization_id = :org "
                            "ORDER BY id", org="acme", columns=["name"])
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert len(sent) == 1 and sent[0].startswith("SELECT id, name FROM agent"), sent
    assert list(frame.columns) == ["name"] and len(frame) == 2


def test_read_sql_passes_pandas_options_to_pandas(db: rnb.ReactiveDB) -> None:
    frame = db.read_sql("SELECT id, name FROM agent WHERE organization_id = :org ORDER BY id",
                        org="acme", index_col="id", dtype_backend="pyarrow")
    assert list(frame.index) == [1, 2] and frame.index.name == "id"
    assert str(frame["name"].dtype).startswith("string")  # pyarrow-backed, not object
    same = db.read_sql("SELECT :columns AS c", params={"columns": "x"})  # a parameter named
    assert same["c"][0] == "x"  # like an option goes through params=
