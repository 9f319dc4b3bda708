"""Bad options to ``connect()`` and ``@db.reactive`` are one ``ConfigError`` line naming the
option and the shape it expects, raised before anything runs (no engine, no connection)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
import teamhub

import reactive_nb as rnb
from reactive_nb import settings
from reactive_nb.errors import ConfigError
from reactive_nb.live.functions import PRIORITIES

#: A database that does not exist: connecting to it (or to no server at all) would raise a
#: connection error, never a ConfigError.
MISSING_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/rnb_no_such_database_here"


def one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message, repr(message)
    return message


# -- connect() -------------------------------------------------------------------------------

BAD_OPTIONS: list[tuple[dict[str, Any], list[str]]] = [
    ({"relations": ["agent"]}, ["relations", "mapping {table: [table, ...]}", "['agent']"]),
    ({"relations": {"agent": None}}, ["relations", "mapping {table: [table, ...]}",
                                      "relations['agent'] is None"]),
    ({"relations": [1]}, ["relations", "mapping {table: [table, ...]}", "[1]"]),
    ({"relations": {"agent": [1]}}, ["relations", "mapping {table: [table, ...]}",
                                     "relations['agent'][0] is 1"]),
    ({"relations": {"agent": {"x": 1}}}, ["relations", "relations['agent'] is {'x': 1}"]),
    ({"relations": {1: ["agent"]}}, ["relations", "key 1"]),
    ({"tenants": "acme"}, ["tenants", "list of tenant names", "'acme'"]),
    ({"tenants": ["acme", 2]}, ["tenants", "list of tenant names", "tenants[1] is 2"]),
    ({"min_interval": -1}, ["min_interval", "number of seconds >= 0", "-1"]),
    ({"min_interval": "5"}, ["min_interval", "number of seconds >= 0", "'5'"]),
    ({"min_interval": float("nan")}, ["min_interval", "number of seconds >= 0"]),
    ({"cache_bytes": -5}, ["cache_bytes", "whole number of bytes > 0", "-5"]),
    ({"workers": -1}, ["workers", "whole number >= 0", "-1"]),
    ({"workers": 1.5}, ["workers", "whole number >= 0", "1.5"]),
    ({"capture": "sometimes"}, ["capture", "'auto', 'local' or 'none'", "'sometimes'"]),
    ({"install": "yes"}, ["install", "True or False", "'yes'"]),
    ({"key_prefix": ""}, ["key_prefix", "non-empty string or None"]),
    ({"redis": "http://x"}, ["redis", "redis://", "'http://x'"]),
    ({"redis": 6379}, ["redis", "redis://", "6379"]),
    ({"relatoins": {}}, ["relatoins: unknown option (did you mean 'relations'?)"]),
    ({"ttl": 5}, ["ttl: unknown option (options: relations, redis, capture"]),
]


@pytest.mark.parametrize("options, expected", BAD_OPTIONS,
                         ids=[next(iter(o)) + "=" + repr(o[next(iter(o))]) for o, _ in BAD_OPTIONS])
def test_bad_connect_option_is_one_config_error_and_nothing_connects(
        options: dict[str, Any], expected: list[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy

    engines: list[Any] = []
    real_create_engine = sqlalchemy.create_engine

    def create_engine(*args: Any, **kwargs: Any) -> Any:
        engines.append(args)
        return real_create_engine(*args, **kwargs)

    monkeypatch.setattr(sqlalchemy, "create_engine", create_engine)
    absent = tmp_path / "absent.db"
    for url in (MISSING_PG, f"sqlite:///{absent}"):
        with pytest.raises(ConfigError) as info:
            rnb.connect(url, **options)
        message = one_line(info.value)
        assert message.startswith(f"connect(): {next(iter(options))}"), message
        for text in expected:
            assert text in message, (text, message)
    assert engines == [] and not absent.exists()


def test_every_bad_option_is_named_on_the_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        rnb.connect(MISSING_PG, min_interval=-1, workers="4", capture=None)
    message = one_line(info.value)
    assert ("min_interval:" in message and "workers:" in message and "capture:" in message
            and message.count("; ") == 2), message


def test_good_options_are_accepted_and_normalised() -> None:
    parsed = settings.Settings.parse({"relations": {"agent": "organization"},
                                      "tenants": ["acme"], "min_interval": 0, "workers": 0,
                                      "cache_bytes": 1, "redis": "redis://127.0.0.1:6379/0"})
    assert parsed.relations == {"agent": ("organization",)} and parsed.tenants == ("acme",)
    assert settings.Settings.parse({"relations": None}).relations == {}


# -- @db.reactive --------------------------------------------------------------------------


@pytest.fixture
def db(sqlite_url: str) -> Any:
    teamhub.create(sqlite_url)
    with rnb.connect(sqlite_url, workers=0) as db:
        yield db


def handler_for(db: Any) -> Any:
    def agents(org: str) -> Any:
        return db.read_sql("SELECT id FROM agent WHERE organization_id = :org", org=org)
    return agents


BAD_FUNCTION_OPTIONS: list[tuple[dict[str, Any], list[str]]] = [
    ({"dependencies": "agent"},
     ["dependencies: expected a list of table names",
      "not one string (write dependencies=['agent'])"]),
    ({"dependencies": [1]}, ["dependencies: expected a list of table names",
                             "dependencies[0] is 1"]),
    ({"dependencies": {"agent": 1}}, ["dependencies: expected a list of table names"]),
    ({"ttl": "5"}, ["ttl: expected a positive number of seconds (or None: no expiry)",
                    "got '5'"]),
    ({"ttl": 0}, ["ttl: expected a positive number of seconds", "got 0"]),
    ({"ttl": True}, ["ttl: expected a positive number of seconds", "got True"]),
    ({"ttl": float("nan")}, ["ttl: expected a positive number of seconds"]),
    ({"priority": "urgent"}, ["priority: expected one of 'high', 'normal' or 'low'",
                              "got 'urgent'"]),
    ({"name": ""}, ["name: expected a non-empty name without spaces", "got ''"]),
    ({"name": "agents by org"}, ["name: expected a non-empty name without spaces"]),
    ({"name": 3}, ["name: expected a non-empty name without spaces", "got 3"]),
    ({"cache": "no"}, ["cache: expected True or False", "got 'no'"]),
    ({"key": "id"}, ["key: expected a function of the inputs returning the cache key",
                     "got 'id'"]),
]


@pytest.mark.parametrize("options, expected", BAD_FUNCTION_OPTIONS,
                         ids=[f"{k}={v!r}" for o, _ in BAD_FUNCTION_OPTIONS
                              for k, v in o.items()])
def test_bad_reactive_option_is_one_config_error(
        db: Any, options: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        db.reactive(**options)(handler_for(db))
    message = one_line(info.value)
    assert message.startswith("reactive("), message
    for text in expected:
        assert text in message, (text, message)
    assert db.functions == {}  # nothing was registered


def test_reactive_given_a_name_instead_of_a_function(db: Any) -> None:
    with pytest.raises(ConfigError) as info:
        db.reactive("agents.byOrg")
    assert one_line(info.value) == (
        "reactive(): expected a function to decorate, got 'agents.byOrg' "
        "(give the name as name='agents.byOrg')")


def test_good_reactive_options(db: Any) -> None:
    fn = db.reactive(name="agents.getAll", dependencies=("agent",), ttl=5, priority="high",
                     cache=False, key=lambda inputs: str(inputs["org"]))(handler_for(db))
    assert fn.name == "agents.getAll" and fn.declared == {"agent"} and fn.ttl == 5
    assert fn.priority == "high" and fn.cache_enabled is False
    assert db.reactive(dependencies={"agent"}, ttl=0.5)(handler_for(db)).ttl == 0.5
    assert list(fn(org="acme")["id"]) == [1, 2]


def test_priorities_are_the_functions_own() -> None:
    assert typing.get_args(settings.Priority) == PRIORITIES
