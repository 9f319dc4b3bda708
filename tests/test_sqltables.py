"""SQL -> tables read and written: the table-driven cases in fixtures/sql_cases.yaml,
plus the cache, the dialect mapping and silence on bad SQL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from reactive_nb.model.sql import SqlAnalysis, analyze, sqlglot_dialect

CASES_FILE = Path(__file__).parent / "fixtures" / "sql_cases.yaml"
CASE_KEYS = {"id", "sql", "dialect", "reads", "writes", "ok"}


def _load_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = yaml.safe_load(CASES_FILE.read_text())["cases"]
    for case in cases:
        assert set(case) == CASE_KEYS, f"case {case.get('id')!r} has keys {sorted(case)}"
        assert case["dialect"] in ("sqlite", "postgres", "mysql", None), case["id"]
    ids = [case["id"] for case in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases


CASES = _load_cases()


def test_fixture_has_enough_cases() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    analyze.cache_clear()  # exercise the real analysis, not an earlier case's result
    result = analyze(case["sql"], case["dialect"])
    assert isinstance(result, SqlAnalysis)
    assert (sorted(result.reads), sorted(result.writes), result.ok) == (
        sorted(str(t) for t in case["reads"]),
        sorted(str(t) for t in case["writes"]),
        case["ok"],
    )


def test_repeated_call_hits_cache() -> None:
    sql = "SELECT * FROM agent JOIN organization o ON o.id = agent.org_id"
    analyze.cache_clear()
    first = analyze(sql, "postgres")
    hits = analyze.cache_info().hits
    second = analyze(sql, "postgres")
    assert analyze.cache_info().hits == hits + 1
    assert second is first
    assert analyze.cache_info().maxsize == 4096


def test_cache_is_keyed_on_dialect() -> None:
    # Backticks quote an identifier in MySQL only; PostgreSQL rejects them.
    sql = "SELECT * FROM `Order`"
    assert analyze(sql, "mysql") == SqlAnalysis(frozenset({"order"}), frozenset(), True)
    assert analyze(sql, "postgres") == SqlAnalysis(ok=False)
    assert analyze(sql, "mysql") == SqlAnalysis(frozenset({"order"}), frozenset(), True)


def test_result_is_frozen() -> None:
    result = analyze("SELECT * FROM a")
    with pytest.raises(AttributeError):
        result.ok = False  # type: ignore[misc]
    assert isinstance(result.reads, frozenset)
    assert isinstance(result.writes, frozenset)


@pytest.mark.parametrize(
    ("sqlalchemy_name", "expected"),
    [
        ("postgresql", "postgres"),
        ("sqlite", "sqlite"),
        ("mysql", "mysql"),
        ("mariadb", "mysql"),
        ("mssql", None),
        ("oracle", None),
        ("", None),
    ],
)
def test_sqlglot_dialect(sqlalchemy_name: str, expected: str | None) -> None:
    assert sqlglot_dialect(sqlalchemy_name) == expected


@pytest.mark.parametrize("sql", ["SELECT 1", "COMMIT"])
def test_unknown_dialect_is_an_error(sql: str) -> None:
    with pytest.raises(ValueError):
        analyze(sql, "no-such-dialect")


# Parse errors, and statements sqlglot parses as a generic Command after logging a
# warning on its "sqlglot" logger (REFRESH, CALL, LOCK, DO, CREATE TRIGGER).
GARBAGE = [
    ("THIS IS NOT SQL AT ALL", None),
    ("SELECT * FROM WHERE (", "sqlite"),
    ("SELECT 'unterminated", "mysql"),
    ("REFRESH MATERIALIZED VIEW mv", "postgres"),
    ("CALL refresh_all()", "postgres"),
    ("LOCK TABLE agent IN EXCLUSIVE MODE", "postgres"),
    ("DO $$ BEGIN DELETE FROM a; END $$", "postgres"),
    ("CREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; END", "sqlite"),
]


@pytest.mark.parametrize(("sql", "dialect"), GARBAGE)
def test_nothing_logged_or_printed_for_bad_sql(
    sql: str,
    dialect: str | None,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    analyze.cache_clear()
    with caplog.at_level(logging.DEBUG):
        assert analyze(sql, dialect).ok is False
    assert caplog.records == []
    assert capsys.readouterr() == ("", "")


def test_sqlglot_logging_outside_analyze_is_untouched(caplog: pytest.LogCaptureFixture) -> None:
    import sqlglot

    with caplog.at_level(logging.WARNING, logger="sqlglot"):
        sqlglot.parse("REFRESH MATERIALIZED VIEW mv", read="postgres")
    assert any(r.name == "sqlglot" for r in caplog.records)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_written_tables_agrees_with_analyze(case: dict[str, Any]) -> None:
    """The capture fast path reports exactly the written tables of the full analysis. It
    may call a statement understood that the full analysis could not parse only when it
    is a lone SELECT without INTO (it writes nothing; the database rejects bad SQL) or a
    lone INSERT/UPDATE/DELETE whose one target it does name."""
    from reactive_nb.model.sql import written_tables

    writes, ok = written_tables(case["sql"], case["dialect"])
    if case["ok"]:
        assert ok and writes == frozenset(case["writes"])
    elif ok:
        lone_select = case["sql"].lstrip().upper().startswith("SELECT") and not writes
        assert lone_select or writes == frozenset(case["writes"]) != frozenset()


@pytest.mark.parametrize(("sql", "writes"), [
    ("SELECT * FROM agent WHERE id = 12345", set()),
    ("  -- a comment\n select 1;", set()),
    ("INSERT INTO audit (id, note) VALUES (7, 'it''s; fine')", None),  # ';' in a literal
    ("INSERT INTO audit (id, note) VALUES (7, 'x')", {"audit"}),
    ('insert into "Public"."Audit Log" values (1)', {"public.audit log"}),
    ("UPDATE agent a SET name = 'x' WHERE a.id = 1", {"agent"}),
    ("UPDATE ONLY agent SET name = 'x'", {"agent"}),
    ("DELETE FROM message m WHERE m.id IN (SELECT id FROM audit)", {"message"}),
    ("DELETE FROM message", {"message"}),
    ("SELECT id INTO archive FROM agent", {"archive"}),
    ("UPDATE a, b SET a.x = b.x", {"a", "b"}),
])
def test_written_tables_fast_path(sql: str, writes: set[str] | None) -> None:
    from reactive_nb.model.sql import analyze, written_tables

    got, ok = written_tables(sql, "mysql" if "a, b" in sql else "postgres")
    assert ok
    expected = analyze(sql, "postgres").writes if writes is None else frozenset(writes)
    assert got == expected
