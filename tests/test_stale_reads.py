"""Never a stale read: one named test per reproduced invalidation hole, plus precision.

Each test serves a result, writes through the path that used to be missed, and checks that
the next read equals the same query run fresh. Live queries are driven step by step
(``workers=0`` + ``db.scheduler.run_until_idle()``) where no other thread is involved, so
what ran and what did not is exact.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine, text

import reactive_nb as rnb
from tests.external_writer import psycopg_write
from tests.teamhub import create, wait_for

FK_SCHEMA = [
    "CREATE TABLE org (id VARCHAR(20) PRIMARY KEY)",
    """CREATE TABLE member (id INTEGER PRIMARY KEY,
        org_id VARCHAR(20) REFERENCES org(id) ON DELETE CASCADE, name VARCHAR(50))""",
    """CREATE TABLE post (id INTEGER PRIMARY KEY,
        member_id INTEGER REFERENCES member(id) ON DELETE SET NULL, body VARCHAR(50))""",
    "CREATE VIEW member_v AS SELECT id, org_id, name FROM member",
    "INSERT INTO org VALUES ('acme'), ('globex')",
    "INSERT INTO member VALUES (1, 'acme', 'ada'), (2, 'globex', 'cy')",
    "INSERT INTO post VALUES (1, 1, 'hi'), (2, 2, 'yo')",
]


def fresh(url: str, sql: str) -> pd.DataFrame:
    """The query run on a plain connection that reactive_nb does not touch."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return pd.read_sql(text(sql), conn)
    finally:
        engine.dispose()


def execute_plain(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def fk_db(db_url: str) -> Iterator[tuple[rnb.ReactiveDB, str]]:
    statements = list(FK_SCHEMA)
    if db_url.startswith("sqlite"):
        statements = ["PRAGMA foreign_keys = ON", *statements]
    execute_plain(db_url, *statements)
    db = rnb.connect(db_url, workers=0, min_interval=0)
    if db_url.startswith("sqlite"):
        from sqlalchemy import event

        event.listen(db.engine, "connect",
                     lambda conn, _: conn.execute("PRAGMA foreign_keys = ON"))
        db.engine.dispose()  # new connections get the pragma
    yield db, db_url
    db.close()


# -- 1. multi-table transactions from another client (triggers) ---------------------------

def test_external_multi_table_transaction_invalidates_every_table(pg_url: str) -> None:
    create(pg_url)
    with rnb.connect(pg_url) as db:
        @db.reactive(dependencies=["agent"])
        def agents() -> pd.DataFrame:
            return db.read_sql("SELECT id FROM agent ORDER BY id")

        @db.reactive(dependencies=["message"])
        def messages() -> pd.DataFrame:
            return db.read_sql("SELECT id FROM message ORDER BY id")

        db.install_triggers(["agent", "message"])
        live_agents, live_messages = agents.live().wait(10), messages.live().wait(10)
        psycopg_write(pg_url, "BEGIN; INSERT INTO agent (id, organization_id, name) "
                              "VALUES (9, 'acme', 'z'); INSERT INTO message VALUES "
                              "(9, 'acme', 9, 'both'); COMMIT;")
        wait_for(live_agents, lambda df: 9 in set(df["id"]))
        wait_for(live_messages, lambda df: 9 in set(df["id"]))
        assert list(messages()["id"]) == [1, 2, 9]  # the cached call too


# -- 2. views ------------------------------------------------------------------------------

@pytest.mark.parametrize("declared", [True, False], ids=["declared", "inferred"])
def test_result_over_a_view_is_invalidated_by_its_base_table(
        fk_db: tuple[rnb.ReactiveDB, str], declared: bool) -> None:
    db, url = fk_db
    sql = "SELECT id, name FROM member_v ORDER BY id"

    @db.reactive(dependencies=["member_v"] if declared else None)
    def members() -> pd.DataFrame:
        return db.read_sql(sql)

    assert len(members()) == 2
    assert "member" in members.watched
    db.execute("INSERT INTO member VALUES (3, 'acme', 'eve')")
    pd.testing.assert_frame_equal(members(), fresh(url, sql))
    assert len(members()) == 3


def test_a_view_redefined_over_another_table_is_followed_by_live_queries(
        db_url: str) -> None:
    """``CREATE OR REPLACE VIEW`` moves a view onto another base table: live queries over
    the view must follow the new base table's writes from then on, not the old one's."""
    replace = ("CREATE OR REPLACE VIEW v AS SELECT x FROM b" if db_url.startswith("postgres")
               else "DROP VIEW v; CREATE VIEW v AS SELECT x FROM b")
    execute_plain(db_url, "CREATE TABLE a (x INTEGER)", "CREATE TABLE b (x INTEGER)",
                  "CREATE VIEW v AS SELECT x FROM a")
    sql = "SELECT count(*) AS n FROM v"
    with rnb.connect(db_url, workers=0, min_interval=0) as db:
        @db.reactive(dependencies=["v"])
        def rows() -> pd.DataFrame:
            return db.read_sql(sql)

        live = rows.live()
        db.scheduler.run_until_idle()
        for statement in replace.split("; "):
            db.execute(statement)
        db.scheduler.run_until_idle()
        db.execute("INSERT INTO b VALUES (1)")
        db.scheduler.run_until_idle()
        assert live.status == "fresh"
        pd.testing.assert_frame_equal(live.df, fresh(db_url, sql))


# -- 11. cascades and writes the SQL does not name -----------------------------------------

def test_cascade_delete_invalidates_child_tables(fk_db: tuple[rnb.ReactiveDB, str]) -> None:
    db, url = fk_db
    member_sql = "SELECT id, name FROM member ORDER BY id"
    post_sql = "SELECT id, member_id FROM post ORDER BY id"

    @db.reactive(dependencies=["member"])
    def members() -> pd.DataFrame:
        return db.read_sql(member_sql)

    @db.reactive(dependencies=["post"])
    def posts() -> pd.DataFrame:
        return db.read_sql(post_sql)

    members(), posts()
    db.execute("DELETE FROM org WHERE id = 'acme'")  # cascades to member, SET NULL on post
    pd.testing.assert_frame_equal(members(), fresh(url, member_sql))
    pd.testing.assert_frame_equal(posts(), fresh(url, post_sql))
    assert list(members()["id"]) == [2]


def test_volatile_function_call_counts_as_a_write(pg_url: str) -> None:
    create(pg_url)
    execute_plain(pg_url, """CREATE FUNCTION add_agent(org text, who text) RETURNS void
        LANGUAGE plpgsql AS $$ BEGIN INSERT INTO agent (id, organization_id, name)
        VALUES ((SELECT max(id) + 1 FROM agent), org, who); END $$""")
    sql = "SELECT id, name FROM agent ORDER BY id"
    with rnb.connect(pg_url) as db:
        @db.reactive(dependencies=["agent"])
        def agents() -> pd.DataFrame:
            return db.read_sql(sql)

        assert len(agents()) == 3
        db.execute("SELECT add_agent('acme', 'fn')")
        pd.testing.assert_frame_equal(agents(), fresh(pg_url, sql))


# -- 7. per-tenant engines: workers run handlers as the live query's tenant ----------------

def test_worker_runs_handler_in_its_tenant_database(tmp_path: object) -> None:
    main_url, acme_url = f"sqlite:///{tmp_path}/main.db", f"sqlite:///{tmp_path}/acme.db"
    create(main_url)
    create(acme_url)
    execute_plain(acme_url, "INSERT INTO agent (id, organization_id, name) "
                            "VALUES (77, 'acme', 'only-in-acme-db')")
    with rnb.connect(main_url, workers=0) as db:
        acme_engine = create_engine(acme_url)
        db.tenants.add("acme", acme_engine)

        @db.reactive(dependencies=["agent"])
        def agents() -> pd.DataFrame:
            return db.read_sql("SELECT id FROM agent ORDER BY id")

        live = agents.live(tenant="acme")
        db.scheduler.run_until_idle()
        assert 77 in set(live.df["id"])  # read acme's database, not the main one
        with db.tenant("acme"):
            assert 77 in set(agents()["id"])
        acme_engine.dispose()


# -- 9. tenant_column triggers and the own-commit dedupe ------------------------------------

def test_own_write_as_one_tenant_changing_another_tenants_rows(pg_url: str) -> None:
    create(pg_url)
    with rnb.connect(pg_url, tenant_column="organization_id") as db:
        @db.reactive(dependencies=["agent"])
        def agents(organization_id: str) -> pd.DataFrame:
            return db.read_sql("SELECT id FROM agent WHERE organization_id = :o ORDER BY id",
                               o=organization_id)

        db.install_triggers(["agent"])
        globex = agents.live(organization_id="globex", tenant="globex").wait(10)
        with db.tenant("acme"):  # written "as acme", but the row belongs to globex
            db.execute("INSERT INTO agent (id, organization_id, name) "
                       "VALUES (31, 'globex', 'x')")
        wait_for(globex, lambda df: 31 in set(df["id"]))


# -- 12. cache keys of untyped inputs -------------------------------------------------------

@pytest.mark.parametrize(("a", "b"), [
    (None, math.nan), ((1, 2), [1, 2]), (b"abc", "abc"),
    (dt.datetime(2026, 1, 2, 3, 4), "2026-01-02T03:04:00"), (1, True),
], ids=["none-nan", "tuple-list", "bytes-str", "datetime-str", "int-bool"])
def test_distinct_untyped_inputs_get_distinct_results(sqlite_url: str, a: object,
                                                      b: object) -> None:
    create(sqlite_url)
    with rnb.connect(sqlite_url) as db:
        @db.reactive(dependencies=["agent"])
        def echo(value):  # type: ignore[no-untyped-def]  # untyped, like %%reactive inputs
            return pd.DataFrame({"repr": [repr(value)]})

        assert echo.cache_key(value=a) != echo.cache_key(value=b)
        assert echo(value=a)["repr"][0] == repr(a)
        assert echo(value=b)["repr"][0] == repr(b)


def test_numpy_scalars_are_accepted_and_equal_python_values(sqlite_url: str) -> None:
    create(sqlite_url)
    with rnb.connect(sqlite_url) as db:
        @db.reactive(dependencies=["agent"])
        def by_id(ident):  # type: ignore[no-untyped-def]
            return db.read_sql("SELECT name FROM agent WHERE id = :i", i=int(ident))

        assert by_id.cache_key(ident=np.int64(1)) == by_id.cache_key(ident=1)
        assert list(by_id(ident=np.int64(1))["name"]) == ["ada"]


# -- 8. definition changes reached through globals and helpers ------------------------------

def test_redefined_function_sees_new_sql_in_a_global(sqlite_url: str) -> None:
    create(sqlite_url)
    with rnb.connect(sqlite_url) as db:
        namespace: dict[str, object] = {"db": db, "rnb": rnb}
        cell = ("@db.reactive(name='q', dependencies=['agent'])\n"
                "def q():\n    return db.read_sql(SQL)\n")
        namespace["SQL"] = "SELECT id FROM agent ORDER BY id"
        exec(cell, namespace)
        assert len(namespace["q"]()) == 3  # type: ignore[operator]
        namespace["SQL"] = "SELECT id FROM agent WHERE organization_id = 'globex'"
        exec(cell, namespace)  # the cell re-run: same code, new global
        assert list(namespace["q"]()["id"]) == [3]  # type: ignore[operator,index]


def test_redefined_with_more_dependencies_its_live_queries_follow_them(
        sqlite_url: str) -> None:
    """A cell re-run with the same code but another ``dependencies=`` (``%%reactive
    --deps``) is another definition: its live query must not join the old definition's
    group, which watches only the old tables and would never hear the new one."""
    create(sqlite_url)
    sql = ("SELECT a.name, count(m.id) AS messages FROM agent a LEFT JOIN message m "
           "ON m.from_agent_id = a.id GROUP BY a.name ORDER BY a.name")
    with rnb.connect(sqlite_url, workers=0, min_interval=0) as db:
        def define(dependencies: list[str]) -> rnb.ReactiveFunction:
            @db.reactive(name="q", dependencies=dependencies)
            def q() -> pd.DataFrame:
                return db.read_sql(sql)
            return q

        old = define(["agent"]).live()  # the first run forgot a table
        db.scheduler.run_until_idle()
        live = define(["agent", "message"]).live()  # the cell re-run, corrected
        db.scheduler.run_until_idle()
        db.execute("INSERT INTO message (id, organization_id, from_agent_id, body) "
                   "VALUES (90, 'acme', 1, 'hi')")
        db.scheduler.run_until_idle()
        pd.testing.assert_frame_equal(live.df, fresh(sqlite_url, sql))
        old.close()


# -- precision: unaffected live queries are not even attempted ------------------------------

def test_unaffected_live_queries_get_no_refresh_attempt(sqlite_url: str) -> None:
    create(sqlite_url)
    with rnb.connect(sqlite_url, workers=0, min_interval=0) as db:
        @db.reactive(dependencies=["agent"])
        def agents(organization_id: str) -> pd.DataFrame:
            return db.read_sql("SELECT id FROM agent WHERE organization_id = :o",
                               o=organization_id)

        @db.reactive(dependencies=["tool"])
        def tools() -> pd.DataFrame:
            return db.read_sql("SELECT id FROM tool")

        acme = agents.live(organization_id="acme", tenant="acme")
        globex = agents.live(organization_id="globex", tenant="globex")
        tool = tools.live(tenant="acme")
        db.scheduler.run_until_idle()
        assert (acme.attempts, globex.attempts, tool.attempts) == (1, 1, 1)
        statuses: list[str] = []
        globex.observe(lambda change: statuses.append(change["new"]), names=["status"])
        tool.observe(lambda change: statuses.append(change["new"]), names=["status"])
        with db.tenant("acme"):
            db.execute("INSERT INTO agent (id, organization_id, name) VALUES (8, 'acme', 'n')")
        assert acme.status == "stale"
        assert db.scheduler.run_until_idle() == 1
        assert acme.attempts == 2 and acme.runs == 2 and len(acme.df) == 3
        assert (globex.attempts, tool.attempts) == (1, 1)  # another tenant, another table
        assert statuses == []  # never even marked stale


# -- TTL -------------------------------------------------------------------------------------

def test_ttl_expires_an_entry(sqlite_url: str) -> None:
    create(sqlite_url)
    now = [1_000_000.0]
    with rnb.connect(sqlite_url) as db:
        db.cache.clock = lambda: now[0]  # type: ignore[attr-defined]
        runs: list[int] = []

        @db.reactive(dependencies=["agent"], ttl=60)
        def agents() -> pd.DataFrame:
            runs.append(1)
            return db.read_sql("SELECT id FROM agent")

        agents()
        now[0] += 59
        agents()
        assert len(runs) == 1  # still within its ttl
        now[0] += 2
        agents()
        assert len(runs) == 2  # expired: ran again with no write at all


def test_a_live_query_refreshes_when_its_ttl_runs_out(sqlite_url: str) -> None:
    """``ttl=`` bounds how old a result may be when a write is not seen (a client without
    triggers): a live query's frame must refresh when it runs out too, with no write and
    no call; cached frames count from when they were computed."""
    create(sqlite_url)
    now = [1_000_000.0]
    with rnb.connect(sqlite_url, workers=0, min_interval=0) as db:
        db.cache.clock = lambda: now[0]
        db.scheduler.clock = lambda: now[0]

        @db.reactive(dependencies=["agent"], ttl=60)
        def agents() -> pd.DataFrame:
            return db.read_sql("SELECT id FROM agent ORDER BY id")

        agents()  # cached at t = 0
        now[0] += 30
        live = agents.live()  # starts from the cached frame, 30 s old
        assert live.status == "fresh" and db.scheduler.run_until_idle() == 0
        execute_plain(sqlite_url, "INSERT INTO agent (id, organization_id, name) "
                                  "VALUES (50, 'acme', 'unseen')")  # no capture sees it
        now[0] += 29
        assert db.scheduler.run_until_idle() == 0 and len(live.df) == 3  # within its TTL
        now[0] += 2
        assert db.scheduler.run_until_idle() == 1  # the TTL ran out: refreshed
        assert live.status == "fresh" and agents.stats.runs == 2
        pd.testing.assert_frame_equal(live.df, fresh(sqlite_url, "SELECT id FROM agent "
                                                                 "ORDER BY id"))
        now[0] += 59
        assert db.scheduler.run_until_idle() == 0  # the new frame has its own TTL
        now[0] += 2
        assert db.scheduler.run_until_idle() == 1


# -- 6. unscoped writes reach every tenant's results, at O(1) cost ---------------------------

def test_unscoped_write_reaches_tenant_results_of_unknown_tenants(sqlite_url: str) -> None:
    create(sqlite_url)
    sql = "SELECT id FROM agent WHERE organization_id = 'globex' ORDER BY id"
    with rnb.connect(sqlite_url, workers=0, min_interval=0) as db:
        @db.reactive(dependencies=["agent"])
        def globex_agents() -> pd.DataFrame:
            return db.read_sql(sql)

        with db.tenant("globex"):  # never registered, no live query: the writer can't know it
            assert list(globex_agents()["id"]) == [3]
        db.execute("INSERT INTO agent (id, organization_id, name) VALUES (21, 'globex', 'u')")
        with db.tenant("globex"):
            pd.testing.assert_frame_equal(globex_agents(), fresh(sqlite_url, sql))
        # one bump in the unscoped scope, none per tenant
        assert db.versions.get("globex", ["agent"]) == {"agent": 0}


def test_unscoped_write_refreshes_live_queries_of_every_tenant(sqlite_url: str) -> None:
    create(sqlite_url)
    with rnb.connect(sqlite_url, workers=0, min_interval=0) as db:
        @db.reactive(dependencies=["agent"])
        def count() -> pd.DataFrame:
            return db.read_sql("SELECT COUNT(*) AS n FROM agent")

        lives = [count.live(tenant=f"t{i}") for i in range(50)]
        assert db.scheduler.run_until_idle() == 50
        db.execute("INSERT INTO agent (id, organization_id, name) VALUES (22, 'x', 'y')")
        assert db.scheduler.run_until_idle() == 50
        assert {int(live.df["n"].iloc[0]) for live in lives} == {4}


def test_a_tenant_write_reaches_the_unscoped_view_but_not_other_tenants(
        sqlite_url: str) -> None:
    create(sqlite_url)
    with rnb.connect(sqlite_url, workers=0, min_interval=0) as db:
        @db.reactive(dependencies=["agent"])
        def count() -> pd.DataFrame:
            return db.read_sql("SELECT COUNT(*) AS n FROM agent")

        everyone, globex = count.live(), count.live(tenant="globex")
        db.scheduler.run_until_idle()
        with db.tenant("acme"):
            db.execute("INSERT INTO agent (id, organization_id, name) VALUES (23, 'acme', 'z')")
        assert everyone.status == "stale" and globex.status == "fresh"
        assert db.scheduler.run_until_idle() == 1
        assert int(everyone.df["n"].iloc[0]) == 4 and globex.attempts == 1
        assert int(count()["n"].iloc[0]) == 4  # the unscoped cached call too


def test_a_tenant_write_does_not_reread_the_schema(sqlite_url: str) -> None:
    """The ``t@tenants`` announcement of a tenant's write is a counter, not an unknown
    table: it must not make every process re-read its catalog on every write."""
    create(sqlite_url)
    with rnb.connect(sqlite_url, workers=0) as db:
        catalog = db.catalog.current
        with db.tenant("acme"):
            db.execute("INSERT INTO agent (id, organization_id, name) VALUES (24, 'acme', 'c')")
        assert db.catalog.current is catalog  # not re-read
        db.execute("CREATE TABLE brand_new (id INTEGER)")
        assert db.catalog.current is not catalog  # DDL naming a new table still is


@pytest.mark.redis
def test_a_first_run_records_every_table_it_turned_out_to_read(
        sqlite_url: str, redis_url: str, redis_prefix: str) -> None:
    """An inferred function learns what it reads only by running, after its versions were
    read: its first entry must still record those tables, or a second kernel whose first
    answer is that entry (it has learned nothing) serves it after a write to them."""
    from tests.teamhub import define_agents_inferred

    create(sqlite_url)
    options = {"redis": redis_url, "key_prefix": redis_prefix, "workers": 0}
    with rnb.connect(sqlite_url, **options) as a, rnb.connect(sqlite_url, **options) as b:
        first, second = define_agents_inferred(a), define_agents_inferred(b)
        first(organization_id="acme")  # the first run: dependencies learned only now
        assert len(second(organization_id="acme")) == 2
        assert second.stats.hits == 1 and second.stats.runs == 0  # a's entry
        a.execute("INSERT INTO agent (id, organization_id, name) VALUES (20, 'acme', 'new')")
        served = second(organization_id="acme")
    expected = fresh(sqlite_url, "SELECT id, name FROM agent WHERE organization_id = 'acme' "
                                 "ORDER BY id")
    pd.testing.assert_frame_equal(served, expected)
