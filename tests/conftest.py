"""Shared fixtures: real SQLite files, a fresh PostgreSQL database per test, a Redis key
prefix per test. A test that needs a server skips when it is unreachable, unless
REACTIVE_NB_REQUIRE_SERVICES=1 (set by .ci/run), where it fails instead."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PG_ADMIN_URL = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/postgres"
REQUIRE = os.environ.get("REACTIVE_NB_REQUIRE_SERVICES") == "1"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (or fail, when services are required) if the server does not answer."""
    if _reachable(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if REQUIRE:
        pytest.fail(f"{reason} and REACTIVE_NB_REQUIRE_SERVICES=1")
    pytest.skip(reason)


def pg_admin_exec(sql: str) -> None:
    """Run ``sql`` as the postgres superuser in the ``postgres`` database (autocommit)."""
    import psycopg

    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(sql)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    need_service("PostgreSQL", PG_HOST, PG_PORT)
    name = f"rnb_test_{uuid.uuid4().hex[:12]}"
    pg_admin_exec(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        pg_admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/test.db"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def redis_url() -> str:
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    import redis

    prefix = new_prefix()
    yield prefix
    delete_prefix(redis.Redis.from_url(redis_url), prefix)


def new_prefix() -> str:
    """A Redis key prefix no other test uses."""
    return f"rnbtest-{uuid.uuid4().hex[:10]}"


def delete_prefix(client: Any, prefix: str) -> None:
    """Delete every key under ``prefix`` (one server or a cluster), then close ``client``."""
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[object]:
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def our_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("reactive_nb-")]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must close what it opens: no reactive_nb-* thread may outlive it."""
    before = set(our_threads())
    yield
    deadline = time.monotonic() + 5.0
    leaked = [t for t in our_threads() if t not in before]
    while leaked and time.monotonic() < deadline:
        leaked[0].join(timeout=0.1)
        leaked = [t for t in our_threads() if t not in before and t.is_alive()]
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"


def _register_hypothesis_profiles() -> None:
    """``ci`` (what the model-based tests run when no profile is chosen: each ~20 s on 2
    cores) and ``soak`` (``--hypothesis-profile soak``, run by ``benchmarks --only
    model``). Other property tests keep Hypothesis' default unless a profile is chosen."""
    from hypothesis import HealthCheck, settings

    quiet = [HealthCheck.too_slow, HealthCheck.filter_too_much]
    settings.register_profile("ci", max_examples=15, stateful_step_count=12,
                              deadline=None, suppress_health_check=quiet)
    settings.register_profile("soak", max_examples=500, stateful_step_count=40,
                              deadline=None, suppress_health_check=quiet)


_register_hypothesis_profiles()
