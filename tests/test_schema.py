"""Schema facts read from real SQLite files and PostgreSQL databases: views, FK actions,
partitions and volatile functions, and how they widen reads and writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from reactive_nb.model.schema import SchemaFacts


def facts(url: str, *statements: str) -> SchemaFacts:
    """Run ``statements`` on a new engine, then read the schema facts through it."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.exec_driver_sql(sql)
        return SchemaFacts.read(engine)
    finally:
        engine.dispose()


def test_view_over_table(db_url: str) -> None:
    f = facts(db_url,
              "CREATE TABLE t (id INTEGER PRIMARY KEY)",
              "CREATE TABLE other (id INTEGER PRIMARY KEY)",
              "CREATE VIEW v AS SELECT id FROM t")
    assert dict(f.views) == {"v": frozenset({"t"})}
    assert f.materialized == frozenset()
    assert f.base_tables(["v", "other"]) == {"t", "other"}
    assert f.base_tables(["V"]) == {"t"}
    # A write into an updatable view writes its base table.
    assert f.widen_writes(["v"]) == {"v", "t"}
    assert f.widen_writes(["t"]) == {"t"}


def test_view_over_view_over_two_tables(db_url: str) -> None:
    f = facts(db_url,
              "CREATE TABLE a (id INTEGER PRIMARY KEY)",
              "CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER)",
              "CREATE VIEW ab AS SELECT a.id, b.id AS bid FROM a JOIN b ON b.a_id = a.id",
              "CREATE VIEW top AS SELECT id FROM ab WHERE bid > 0",
              "CREATE VIEW constant AS SELECT 1 AS one")
    assert dict(f.views) == {"ab": frozenset({"a", "b"}), "top": frozenset({"a", "b"}),
                             "constant": frozenset()}
    assert f.base_tables(["top"]) == {"a", "b"}
    assert f.base_tables(["constant"]) == frozenset()


def test_sqlite_view_ignores_ctes_and_table_functions(sqlite_url: str) -> None:
    f = facts(sqlite_url,
              "CREATE TABLE t (id INTEGER PRIMARY KEY, doc TEXT)",
              "CREATE TABLE u (id INTEGER PRIMARY KEY)",
              "CREATE VIEW v AS WITH recent AS (SELECT id, doc FROM t) "
              "SELECT recent.id, j.value FROM recent, json_each(recent.doc) AS j "
              "WHERE recent.id IN (SELECT id FROM main.u)")
    assert dict(f.views) == {"v": frozenset({"t", "u"})}


def test_sqlite_attached_database_is_a_schema(sqlite_url: str, tmp_path: Path) -> None:
    from sqlalchemy import create_engine, event

    engine = create_engine(sqlite_url)

    @event.listens_for(engine, "connect")
    def attach(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.execute("ATTACH DATABASE ? AS analytics", (str(tmp_path / "analytics.db"),))

    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE analytics.events (id INTEGER PRIMARY KEY)")
            conn.exec_driver_sql("CREATE TABLE analytics.hits (id INTEGER PRIMARY KEY, "
                                 "event_id INTEGER REFERENCES events ON DELETE CASCADE)")
            conn.exec_driver_sql("CREATE VIEW analytics.daily AS SELECT id FROM events")
        f = SchemaFacts.read(engine)
    finally:
        engine.dispose()
    assert dict(f.views) == {"analytics.daily": frozenset({"analytics.events"})}
    assert dict(f.cascades) == {"analytics.events": frozenset({"analytics.hits"})}


@pytest.mark.postgres
def test_materialized_view(pg_url: str) -> None:
    f = facts(pg_url,
              "CREATE TABLE t (id INTEGER PRIMARY KEY)",
              "CREATE MATERIALIZED VIEW m AS SELECT id FROM t",
              "CREATE VIEW over_m AS SELECT id FROM m")
    assert dict(f.views) == {"m": frozenset({"t"}), "over_m": frozenset({"t"})}
    assert f.materialized == {"m"}
    # Only REFRESH changes a materialized view's rows: readers watch the view itself...
    assert f.base_tables(["m"]) == {"m"}
    assert f.base_tables(["over_m"]) == {"t", "m"}
    # ...and a refresh writes nothing but the view.
    assert f.widen_writes(["m"]) == {"m"}
    assert f.widen_writes(["t"]) == {"t"}


@pytest.mark.postgres
def test_view_in_other_schema(pg_url: str) -> None:
    f = facts(pg_url,
              "CREATE SCHEMA analytics",
              "CREATE TABLE users (id INTEGER PRIMARY KEY)",
              "CREATE TABLE analytics.events (id INTEGER PRIMARY KEY, user_id INTEGER)",
              "CREATE VIEW analytics.daily AS SELECT e.id FROM analytics.events e "
              "JOIN users u ON u.id = e.user_id",
              "CREATE VIEW recent_events AS SELECT id FROM analytics.daily")
    assert dict(f.views) == {"analytics.daily": frozenset({"analytics.events", "users"}),
                             "recent_events": frozenset({"analytics.events", "users"})}
    assert f.widen_writes(["analytics.daily"]) == {"analytics.daily", "analytics.events",
                                                   "users"}


def test_cascade_chain(db_url: str) -> None:
    f = facts(db_url,
              "CREATE TABLE a (id INTEGER PRIMARY KEY)",
              "CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a(id) "
              "ON DELETE CASCADE)",
              "CREATE TABLE c (id INTEGER PRIMARY KEY, b_id INTEGER REFERENCES b(id) "
              "ON DELETE CASCADE)")
    assert dict(f.cascades) == {"a": frozenset({"b", "c"}), "b": frozenset({"c"})}
    assert f.widen_writes(["a"]) == {"a", "b", "c"}
    assert f.widen_writes(["b"]) == {"b", "c"}
    assert f.widen_writes(["c"]) == {"c"}


def test_set_null_and_set_default_are_counted(db_url: str) -> None:
    f = facts(db_url,
              "CREATE TABLE p (id INTEGER PRIMARY KEY)",
              "CREATE TABLE nulled (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p(id) "
              "ON DELETE SET NULL)",
              "CREATE TABLE defaulted (id INTEGER PRIMARY KEY, p_id INTEGER DEFAULT 0 "
              "REFERENCES p(id) ON UPDATE SET DEFAULT)")
    assert dict(f.cascades) == {"p": frozenset({"nulled", "defaulted"})}


def test_no_action_and_restrict_are_not_counted(db_url: str) -> None:
    f = facts(db_url,
              "CREATE TABLE p (id INTEGER PRIMARY KEY)",
              "CREATE TABLE plain (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p(id))",
              "CREATE TABLE strict (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p(id) "
              "ON DELETE RESTRICT ON UPDATE NO ACTION)")
    assert dict(f.cascades) == {}
    assert f.widen_writes(["p"]) == {"p"}


def test_self_reference_includes_the_table_itself(db_url: str) -> None:
    f = facts(db_url,
              "CREATE TABLE node (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES node(id) "
              "ON DELETE CASCADE)")
    assert dict(f.cascades) == {"node": frozenset({"node"})}


def test_write_into_view_cascades_from_its_base_table(db_url: str) -> None:
    f = facts(db_url,
              "CREATE TABLE a (id INTEGER PRIMARY KEY)",
              "CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a(id) "
              "ON DELETE CASCADE)",
              "CREATE VIEW active_a AS SELECT id FROM a")
    assert f.widen_writes(["active_a"]) == {"active_a", "a", "b"}


@pytest.mark.postgres
def test_partitions(pg_url: str) -> None:
    f = facts(pg_url,
              "CREATE TABLE measurements (y INTEGER, region TEXT) PARTITION BY RANGE (y)",
              "CREATE TABLE part_2023 PARTITION OF measurements FOR VALUES FROM (2023) TO (2024)",
              "CREATE TABLE part_2024 PARTITION OF measurements FOR VALUES FROM (2024) TO (2025) "
              "PARTITION BY LIST (region)",
              "CREATE TABLE part_2024_eu PARTITION OF part_2024 FOR VALUES IN ('eu')",
              "CREATE TABLE part_2024_us PARTITION OF part_2024 FOR VALUES IN ('us')",
              "CREATE INDEX measurements_y ON measurements (y)")
    assert dict(f.partitions) == {"part_2023": "measurements", "part_2024": "measurements",
                                  "part_2024_eu": "measurements",
                                  "part_2024_us": "measurements"}
    assert f.widen_writes(["part_2023"]) == {"part_2023", "measurements"}
    assert f.widen_writes(["part_2024_eu"]) == {"part_2024_eu", "part_2024", "measurements"}
    # A write to a partitioned table lands in one of its partitions.
    assert f.widen_writes(["part_2024"]) == {"part_2024", "part_2024_eu", "part_2024_us",
                                             "measurements"}
    assert f.widen_writes(["measurements"]) == {"measurements", "part_2023", "part_2024",
                                                "part_2024_eu", "part_2024_us"}


@pytest.mark.postgres
def test_cascade_into_and_out_of_partitioned_tables(pg_url: str) -> None:
    f = facts(pg_url,
              "CREATE TABLE customers (id INTEGER PRIMARY KEY)",
              "CREATE TABLE orders (id INTEGER, y INTEGER, customer_id INTEGER "
              "REFERENCES customers(id) ON DELETE CASCADE, PRIMARY KEY (id, y)) "
              "PARTITION BY RANGE (y)",
              "CREATE TABLE orders_old PARTITION OF orders FOR VALUES FROM (0) TO (2024)",
              "CREATE TABLE orders_new PARTITION OF orders FOR VALUES FROM (2024) TO (3000)",
              "CREATE TABLE lines (id INTEGER PRIMARY KEY, order_id INTEGER, y INTEGER, "
              "FOREIGN KEY (order_id, y) REFERENCES orders(id, y) ON DELETE CASCADE)")
    everything = {"customers", "orders", "orders_old", "orders_new", "lines"}
    assert f.widen_writes(["customers"]) == everything
    assert f.widen_writes(["orders_old"]) == {"orders_old", "orders", "lines"}
    assert f.widen_writes(["lines"]) == {"lines"}


@pytest.mark.postgres
def test_volatile_functions_and_procedures(pg_url: str) -> None:
    f = facts(pg_url,
              "CREATE SCHEMA analytics",
              "CREATE TABLE audit (msg TEXT)",
              "CREATE FUNCTION log_it(m TEXT) RETURNS void LANGUAGE plpgsql AS "
              "$$ BEGIN INSERT INTO audit VALUES (m); END $$",
              "CREATE FUNCTION twice(x INTEGER) RETURNS INTEGER LANGUAGE sql IMMUTABLE "
              "AS $$ SELECT x * 2 $$",
              "CREATE FUNCTION audit_count() RETURNS BIGINT LANGUAGE sql STABLE "
              "AS $$ SELECT count(*) FROM audit $$",
              "CREATE PROCEDURE purge() LANGUAGE sql AS $$ DELETE FROM audit $$",
              "CREATE FUNCTION analytics.\"Track\"() RETURNS void LANGUAGE plpgsql AS "
              "$$ BEGIN INSERT INTO audit VALUES ('t'); END $$")
    assert f.volatile_functions == {"log_it", "public.log_it", "purge", "public.purge",
                                    "track", "analytics.track"}
    assert f.calls_volatile(["LOG_IT"])
    assert f.calls_volatile(["twice", "public.log_it"])
    assert f.calls_volatile(['"analytics"."Track"'])
    assert not f.calls_volatile(["twice", "audit_count", "now", "public.twice"])
    assert not f.calls_volatile(["other.log_it"])
    assert not f.calls_volatile([])


def test_sqlite_has_no_partitions_or_functions(sqlite_url: str) -> None:
    f = facts(sqlite_url, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    assert dict(f.partitions) == {}
    assert f.volatile_functions == frozenset()
    assert not f.calls_volatile(["random"])


def test_mixed_case_quoted_names(db_url: str) -> None:
    f = facts(db_url,
              'CREATE TABLE "MixedCase" (id INTEGER PRIMARY KEY)',
              'CREATE TABLE "Child" (id INTEGER PRIMARY KEY, '
              'p INTEGER REFERENCES "MixedCase"(id) ON DELETE CASCADE)',
              'CREATE TABLE "we""ird" (id INTEGER PRIMARY KEY, '
              'p INTEGER REFERENCES "MixedCase"(id) ON UPDATE CASCADE)',
              'CREATE VIEW "MixedView" AS SELECT id FROM "MixedCase"')
    assert dict(f.views) == {"mixedview": frozenset({"mixedcase"})}
    assert dict(f.cascades) == {"mixedcase": frozenset({"child", 'we"ird'})}
    assert f.base_tables(["MixedView"]) == {"mixedcase"}
    assert f.widen_writes(["MixedCase"]) == {"mixedcase", "child", 'we"ird'}


def test_reactive_nb_tables_are_ignored(db_url: str) -> None:
    f = facts(db_url,
              "CREATE TABLE t (id INTEGER PRIMARY KEY)",
              "CREATE TABLE _reactive_nb_log (id INTEGER PRIMARY KEY, t_id INTEGER "
              "REFERENCES t(id) ON DELETE CASCADE)",
              "CREATE VIEW _reactive_nb_view AS SELECT id FROM t",
              "CREATE VIEW v AS SELECT t.id FROM t JOIN _reactive_nb_log l ON l.t_id = t.id")
    assert dict(f.views) == {"v": frozenset({"t"})}
    assert dict(f.cascades) == {}


@pytest.mark.postgres
def test_reactive_nb_schema_is_ignored(pg_url: str) -> None:
    f = facts(pg_url,
              "CREATE SCHEMA reactive_nb",
              "CREATE TABLE t (id INTEGER PRIMARY KEY)",
              "CREATE TABLE reactive_nb.log (id INTEGER PRIMARY KEY, t_id INTEGER "
              "REFERENCES t(id) ON DELETE CASCADE)",
              "CREATE VIEW reactive_nb.v AS SELECT id FROM t",
              "CREATE FUNCTION reactive_nb.note() RETURNS void LANGUAGE sql "
              "AS $$ SELECT 1 $$",
              "CREATE VIEW sessions AS SELECT pid FROM pg_stat_activity")
    assert dict(f.views) == {"sessions": frozenset()}
    assert dict(f.cascades) == {}
    assert f.volatile_functions == frozenset()


def test_unknown_dialect_and_hand_built_facts() -> None:
    empty = SchemaFacts()
    assert empty.base_tables(["A", "s.B"]) == {"a", "s.b"}
    assert empty.widen_writes(["A"]) == {"a"}
    assert not empty.calls_volatile(["f"])
    # Without immediate parents, a partition still widens to its top-level parent.
    f = SchemaFacts(partitions={"p1": "top", "p2": "top"})
    assert f.widen_writes(["p1"]) == {"p1", "top"}
    assert f.widen_writes(["top"]) == {"top", "p1", "p2"}
