"""The database's own identity names its Redis key space: two databases sharing one Redis
never share entries or counters, and one database reached through two URLs shares both."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import reactive_nb as rnb
from reactive_nb.settings import Settings
from tests.conftest import PG_HOST, PG_PORT, need_service, pg_admin_exec
from tests.teamhub import create
from tests.teamhub import define_agents as define


def _pg(name: str, host: str = PG_HOST, user: str = "postgres") -> str:
    return f"postgresql+psycopg://{user}@{host}:{PG_PORT}/{name}"


@pytest.fixture
def pg_names() -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL databases with the same schema and different rows: database B
    has one more ``acme`` agent, so the same query gives different frames."""
    need_service("PostgreSQL", PG_HOST, PG_PORT)
    names = (f"rnb_test_{uuid.uuid4().hex[:12]}", f"rnb_test_{uuid.uuid4().hex[:12]}")
    try:
        for name in names:
            pg_admin_exec(f'CREATE DATABASE "{name}"')
            create(_pg(name))
        engine = create_engine(_pg(names[1]))
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO agent (id, organization_id, name) "
                              "VALUES (4, 'acme', 'dee')"))
        engine.dispose()
        yield names
    finally:
        for name in names:
            pg_admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Keys:
    """Connects with the default key prefix under a tenant of this test's own, and deletes
    every key it made afterwards: the tenant's (``rnb*{tenant}*``) and those under each
    database's derived prefix (a fresh database's, so this test's alone)."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.tenant = f"t{uuid.uuid4().hex[:10]}"
        self.patterns = [f"rnb*{{{self.tenant}}}*"]

    def connect(self, url: str, **options: Any) -> rnb.ReactiveDB:
        db = rnb.connect(url, redis=self.redis_url, capture="local", workers=0, **options)
        with contextlib.suppress(ImportError):  # before identities: the tenant's keys only
            self.patterns.append(f"rnb:{_identity()(db.engine)}:*")
        return db

    def delete(self, client: Any) -> None:
        for pattern in self.patterns:
            found = list(client.scan_iter(match=pattern, count=1000))
            if found:
                client.delete(*found)


@pytest.fixture
def keys(redis_url: str, redis_client: Any) -> Iterator[Keys]:
    made = Keys(redis_url)
    yield made
    made.delete(redis_client)


def _identity() -> Callable[[Any], str]:
    from reactive_nb.model.identity import database_identity

    return database_identity


# -- the identity itself -------------------------------------------------------------------


def test_default_key_prefix_is_derived() -> None:
    assert Settings.parse({}).key_prefix is None
    assert Settings.parse({"key_prefix": "mine"}).key_prefix == "mine"
    with pytest.raises(rnb.ConfigError, match="key_prefix"):
        Settings.parse({"key_prefix": ""})


def test_sqlite_identity_follows_the_file_not_the_url(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    identity = _identity()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    create(f"sqlite:///{tmp_path}/a.db")
    create(f"sqlite:///{tmp_path}/b.db")
    (tmp_path / "link.db").symlink_to(tmp_path / "a.db")
    urls = [f"sqlite:///{tmp_path}/a.db", "sqlite:///../a.db", f"sqlite:///{tmp_path}/link.db",
            f"sqlite:///{tmp_path}/sub/../a.db"]
    engines = [create_engine(u) for u in [*urls, f"sqlite:///{tmp_path}/b.db"]]
    try:
        ids = [identity(e) for e in engines]
    finally:
        for e in engines:
            e.dispose()
    assert len(set(ids[:-1])) == 1
    assert ids[-1] != ids[0]
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)


def test_sqlite_in_memory_identity_is_per_engine() -> None:
    identity = _identity()
    one, two = create_engine("sqlite://"), create_engine("sqlite:///:memory:")
    try:
        assert identity(one) == identity(one)
        assert identity(one) != identity(two)
        assert identity(one) != identity(create_engine("sqlite://"))
    finally:
        one.dispose()
        two.dispose()


def test_other_dialects_are_named_by_their_url_without_driver_or_password() -> None:
    """No query is run for them: only ``dialect.name`` and ``url`` are read."""
    from types import SimpleNamespace

    from sqlalchemy import make_url

    identity = _identity()

    def engine(url: str) -> Any:
        return SimpleNamespace(dialect=SimpleNamespace(name="mysql"), url=make_url(url))

    same = [identity(engine("mysql+pymysql://app:secret@db.example:3306/shop")),
            identity(engine("mysql+mysqldb://app:other@db.example:3306/shop"))]
    assert same[0] == same[1]
    assert identity(engine("mysql+pymysql://app:secret@db.example:3306/blog")) != same[0]
    assert "secret" not in same[0] and len(same[0]) == 12


def test_postgres_identity_follows_the_database_not_the_url(
        pg_names: tuple[str, str]) -> None:
    identity = _identity()
    a, b = pg_names
    engines = [create_engine(_pg(a)), create_engine(_pg(a, "localhost")),
               create_engine(_pg(b))]
    try:
        ids = [identity(e) for e in engines]
    finally:
        for e in engines:
            e.dispose()
    assert ids[0] == ids[1]
    assert ids[2] != ids[0]


def test_postgres_identity_without_pg_control_system(pg_names: tuple[str, str]) -> None:
    """A role that may not call pg_control_system() still gets a stable identity, the
    same through 127.0.0.1 and localhost, and another one for another database."""
    identity = _identity()
    role = f"rnb_role_{uuid.uuid4().hex[:10]}"
    pg_admin_exec(f'CREATE ROLE "{role}" LOGIN')
    try:
        for name in pg_names:
            admin = create_engine(_pg(name))
            with admin.begin() as conn:
                conn.execute(text("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC"))
            admin.dispose()
        engines = [create_engine(_pg(pg_names[0], user=role)),
                   create_engine(_pg(pg_names[0], "localhost", user=role)),
                   create_engine(_pg(pg_names[1], user=role))]
        try:
            with engines[0].connect() as conn, pytest.raises(Exception, match="denied"):
                conn.execute(text("SELECT system_identifier FROM pg_control_system()"))
            ids = [identity(e) for e in engines]
        finally:
            for e in engines:
                e.dispose()
        assert ids[0] == ids[1]
        assert ids[2] != ids[0]
    finally:
        # The role owns nothing; its sessions must end before it can be dropped.
        pg_admin_exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       f"WHERE usename = '{role}'")
        pg_admin_exec(f'DROP ROLE IF EXISTS "{role}"')


# -- what it changes for ReactiveDB --------------------------------------------------------


@pytest.mark.redis
def test_two_databases_on_one_redis_never_share(pg_names: tuple[str, str],
                                                keys: Keys) -> None:
    """The fault: with the default prefix, B was served A's frame and read A's counters."""
    a, b = pg_names
    tenant = keys.tenant
    with keys.connect(_pg(a)) as db_a, keys.connect(_pg(b)) as db_b:
        fn_a, fn_b = define(db_a), define(db_b)
        with db_a.tenant(tenant), db_b.tenant(tenant):
            assert len(fn_a(organization_id="acme")) == 2
            assert list(fn_b(organization_id="acme")["name"]) == ["ada", "bob", "dee"]
            assert fn_b.stats.hits == 0 and fn_b.stats.runs == 1
            before = db_b.versions.get(tenant, ["agent"])
            db_a.execute("INSERT INTO agent (id, organization_id, name) "
                         "VALUES (5, 'acme', 'eve')")
            assert db_a.versions.get(tenant, ["agent"])["agent"] >= 1
            assert db_b.versions.get(tenant, ["agent"]) == before  # A's write is A's
            assert len(fn_b(organization_id="acme")) == 3  # B's own entry, still fresh
            assert fn_b.stats.hits == 1


@pytest.mark.redis
def test_one_postgres_database_through_two_urls_shares(pg_names: tuple[str, str],
                                                       keys: Keys) -> None:
    a, tenant = pg_names[0], keys.tenant
    with keys.connect(_pg(a)) as one, keys.connect(_pg(a, "localhost")) as two:
        fn_one, fn_two = define(one), define(two)
        with one.tenant(tenant), two.tenant(tenant):
            assert len(fn_one(organization_id="acme")) == 2
            assert len(fn_two(organization_id="acme")) == 2
            assert (fn_two.stats.hits, fn_two.stats.runs) == (1, 0)  # computed by `one`
            one.execute("INSERT INTO agent (id, organization_id, name) "
                        "VALUES (5, 'acme', 'eve')")
            assert len(fn_two(organization_id="acme")) == 3  # one's write reached two


@pytest.mark.redis
def test_one_sqlite_file_through_relative_absolute_and_linked_paths_shares(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: Keys) -> None:
    tenant = keys.tenant
    create(f"sqlite:///{tmp_path}/team.db")
    (tmp_path / "link.db").symlink_to(tmp_path / "team.db")
    monkeypatch.chdir(tmp_path)
    urls = ["sqlite:///team.db", f"sqlite:///{tmp_path}/team.db", "sqlite:///link.db"]
    dbs = [keys.connect(u) for u in urls]
    try:
        fns = [define(db) for db in dbs]
        with dbs[0].tenant(tenant):
            assert len(fns[0](organization_id="acme")) == 2
            for fn in fns[1:]:
                assert len(fn(organization_id="acme")) == 2
                assert (fn.stats.hits, fn.stats.runs) == (1, 0)
    finally:
        for db in dbs:
            db.close()


@pytest.mark.redis
def test_keys_under_the_derived_and_the_explicit_prefix(
        tmp_path: Path, redis_url: str, redis_prefix: str, redis_client: Any,
        keys: Keys) -> None:
    """Default: ``rnb:<identity>:{tenant}:...``; an explicit ``key_prefix`` is used as is."""
    tenant = keys.tenant
    url = f"sqlite:///{tmp_path}/team.db"
    create(url)
    with keys.connect(url) as db, db.tenant(tenant):
        db.execute("INSERT INTO agent (id, organization_id, name) VALUES (5, 'acme', 'eve')")
        derived = f"rnb:{_identity()(db.engine)}"
        assert redis_client.hget(f"{derived}:{{{tenant}}}:versions", "agent") == b"1"
    with keys.connect(url, key_prefix=redis_prefix) as db, db.tenant(tenant):
        db.execute("INSERT INTO agent (id, organization_id, name) VALUES (6, 'acme', 'fay')")
        assert redis_client.hget(f"{redis_prefix}:{{{tenant}}}:versions", "agent") == b"1"
