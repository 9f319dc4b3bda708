"""Tenant databases and access control (``db.tenancy``), on a real PostgreSQL cluster.

Three organizations in the main database: ``acme`` and ``hooli`` have databases of their
own, ``globex`` lives on the shared (main) database. ``alice`` is a member of all three,
``bob`` of ``globex`` only, ``mallory`` of none. Refreshes are counted with
``live.attempts`` (cache hits included), so "only that tenant refreshed" is proven, not
inferred from frames.
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psycopg
import pytest
from sqlalchemy import Engine, create_engine, event, text

import reactive_nb as rnb
from reactive_nb.errors import ConfigError, TenantDatabaseMissing
from reactive_nb.tenancy import Tenancy
from tests.conftest import PG_HOST, PG_PORT
from tests.redis_server import eventually

DATABASE = "SELECT database_name FROM organization WHERE id = :tenant"
ACCESS = "SELECT 1 FROM membership WHERE user_id = :user AND organization_id = :tenant"
ORGS = ("acme", "hooli", "globex")

MAIN_SCHEMA = [
    "CREATE TABLE organization (id text PRIMARY KEY, name text NOT NULL, database_name text)",
    """CREATE TABLE membership (user_id text NOT NULL, organization_id text NOT NULL,
        PRIMARY KEY (user_id, organization_id))""",
    "CREATE TABLE note (id integer PRIMARY KEY, organization_id text NOT NULL, body text)",
]
TENANT_SCHEMA = [
    "CREATE TABLE note (id integer PRIMARY KEY, organization_id text NOT NULL, body text)",
]


def admin(sql: str) -> None:
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def pg_url_of(database: str, user: str = "postgres") -> str:
    return f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{database}"


@dataclass
class Cluster:
    """The main database and the tenants' own databases (name by tenant)."""

    main: str  # SQLAlchemy URL
    main_name: str
    own: dict[str, str]

    def plain(self, database: str, sql: str, params: dict[str, Any] | None = None) -> None:
        """A write by another client (psycopg, autocommit): not through reactive_nb."""
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=database,
                             autocommit=True) as conn:
            conn.execute(sql, params)  # type: ignore[arg-type]

    def backends(self, database: str) -> int:
        """Client connections to ``database`` now (pg_stat_activity)."""
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                               "AND pid <> pg_backend_pid()", (database,)).fetchone()
        assert row is not None
        return int(row[0])


def build_cluster(main_url: str, extra_orgs: tuple[tuple[str, str | None], ...] = (),
                  shared_rows: tuple[tuple[int, str], ...] = ((1, "globex"), (2, "globex")),
                  ) -> tuple[Cluster, Callable[[], None]]:
    """Create acme's and hooli's databases next to ``main_url`` and fill all three;
    returns the cluster and its clean-up (drops the tenant databases)."""
    suffix = uuid.uuid4().hex[:10]
    own = {"acme": f"rnb_tenant_{suffix}_acme", "hooli": f"rnb_tenant_{suffix}_hooli"}
    for name in own.values():
        admin(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        for name in own.values():
            admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    try:
        engine = create_engine(main_url)
        with engine.begin() as conn:
            for statement in MAIN_SCHEMA:
                conn.execute(text(statement))
            orgs = [("acme", own["acme"]), ("hooli", own["hooli"]), ("globex", None),
                    *extra_orgs]
            conn.execute(text("INSERT INTO organization VALUES (:id, :name, :db)"),
                         [{"id": o, "name": o.title(), "db": d} for o, d in orgs])
            conn.execute(text("INSERT INTO membership VALUES (:u, :o)"),
                         [{"u": "alice", "o": o} for o, _ in orgs]
                         + [{"u": "bob", "o": "globex"}])
            conn.execute(text("INSERT INTO note VALUES (:id, :org, 'shared')"),
                         [{"id": i, "org": o} for i, o in shared_rows])
        engine.dispose()
        for tenant, name in own.items():
            engine = create_engine(pg_url_of(name))
            with engine.begin() as conn:
                for statement in TENANT_SCHEMA:
                    conn.execute(text(statement))
                conn.execute(text("INSERT INTO note VALUES (1, :org, 'own')"), {"org": tenant})
            engine.dispose()
    except BaseException:
        drop()
        raise
    main_name = main_url.rsplit("/", 1)[1]
    return Cluster(main_url, main_name, own), drop


@pytest.fixture
def cluster(pg_url: str) -> Iterator[Cluster]:
    built, drop = build_cluster(pg_url)
    try:
        yield built
    finally:
        drop()


def define_notes(db: rnb.ReactiveDB, calls: list[str] | None = None) -> rnb.ReactiveFunction:
    @db.reactive(dependencies=["note"])
    def notes(org: str) -> pd.DataFrame:
        if calls is not None:
            calls.append(org)
        return db.read_sql("SELECT id, organization_id, body FROM note "
                           "WHERE organization_id = :o ORDER BY id", o=org)

    return notes


def define_everything(db: rnb.ReactiveDB) -> rnb.ReactiveFunction:
    """No inputs, no WHERE: the same cache key for every tenant."""

    @db.reactive(dependencies=["note"])
    def everything() -> pd.DataFrame:
        return db.read_sql("SELECT id, organization_id FROM note ORDER BY id")

    return everything


def attempts(lives: dict[str, rnb.LiveQuery]) -> dict[str, int]:
    return {tenant: live.attempts for tenant, live in lives.items()}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {tenant: after[tenant] - before[tenant] for tenant in after}


def when(live: rnb.LiveQuery, predicate: Callable[[rnb.LiveQuery], bool]) -> threading.Event:
    """An event set once ``predicate(live)`` holds after a trait change (no polling)."""
    hit = threading.Event()

    def check(_: object = None) -> None:
        if predicate(live):
            hit.set()

    live.observe(check, names=["status", "df", "attempts"])
    check()
    return hit


def tenancy(db: rnb.ReactiveDB, user: str = "alice", **options: Any) -> Tenancy:
    return db.tenancy(database=DATABASE, access=ACCESS, user=user, **options)


# -- capture and refresh per tenant database ------------------------------------------------

def test_writes_to_one_tenant_refresh_only_its_live_queries(cluster: Cluster) -> None:
    with rnb.connect(cluster.main, workers=0, min_interval=0) as db:
        tenants = tenancy(db)
        notes, everything = define_notes(db), define_everything(db)
        handles = {t: tenants.open(t) for t in ORGS}
        assert handles["acme"].database == cluster.own["acme"]
        assert handles["globex"].database is None
        lives = {t: handles[t].live(notes, org=t) for t in ORGS}
        alls = {t: handles[t].live(everything) for t in ORGS}
        db.scheduler.run_until_idle()
        for tenant in ORGS:  # each reads its own database (or its rows of the shared one)
            assert set(lives[tenant].df["organization_id"]) == {tenant}
            assert set(alls[tenant].df["organization_id"]) == {tenant}

        # In-process, through a tenant database's engine: captured as that tenant.
        before = {**attempts(lives), **{f"all-{t}": n for t, n in attempts(alls).items()}}
        handles["acme"].execute("INSERT INTO note VALUES (2, 'acme', 'a2')")
        assert lives["acme"].status == "stale"
        assert {t: lives[t].status for t in ("hooli", "globex")} == {
            "hooli": "fresh", "globex": "fresh"}
        db.scheduler.run_until_idle()
        after = {**attempts(lives), **{f"all-{t}": n for t, n in attempts(alls).items()}}
        assert delta(after, before) == {"acme": 1, "hooli": 0, "globex": 0,
                                        "all-acme": 1, "all-hooli": 0, "all-globex": 0}
        assert list(lives["acme"].df["id"]) == [1, 2]
        assert set(alls["hooli"].df["organization_id"]) == {"hooli"}

        # In-process, on the shared database as globex.
        before = attempts(lives)
        handles["globex"].execute("INSERT INTO note VALUES (5, 'globex', 'g5')")
        db.scheduler.run_until_idle()
        assert delta(attempts(lives), before) == {"acme": 0, "hooli": 0, "globex": 1}
        assert 5 in set(lives["globex"].df["id"])

        # Another client writes into hooli's database: its triggers' listener reports it.
        installed = tenants.install_triggers()
        assert installed[cluster.own["hooli"]] == ["note"]
        assert installed[cluster.own["acme"]] == ["note"]
        assert tenants.stats()["listening"] == ["acme", "hooli"]
        before = attempts(lives)
        stale = when(lives["hooli"], lambda live: live.status == "stale")
        cluster.plain(cluster.own["hooli"], "INSERT INTO note VALUES (2, 'hooli', 'h2')")
        assert stale.wait(10), lives["hooli"].status
        db.scheduler.run_until_idle()
        assert delta(attempts(lives), before) == {"acme": 0, "hooli": 1, "globex": 0}
        assert list(lives["hooli"].df["id"]) == [1, 2]
        # Our own commit into acme's database is published once, not again by its trigger.
        before = attempts(lives)
        handles["acme"].execute("INSERT INTO note VALUES (3, 'acme', 'a3')")
        db.scheduler.run_until_idle()
        assert delta(attempts(lives), before) == {"acme": 1, "hooli": 0, "globex": 0}


def test_listener_per_tenant_database_follows_its_live_queries(cluster: Cluster) -> None:
    with rnb.connect(cluster.main, workers=0, min_interval=0) as db:
        tenants = tenancy(db)
        notes = define_notes(db)
        tenants.install_triggers()
        assert tenants.stats()["listening"] == []  # no live query yet: nothing followed
        acme = tenants.open("acme").live(notes, org="acme")
        globex = tenants.open("globex").live(notes, org="globex")
        assert tenants.stats()["listening"] == ["acme"]  # globex: the main database's
        second = tenants.open("acme").live(notes, org="nobody")
        acme.close()
        assert tenants.stats()["listening"] == ["acme"]  # one acme live query is left
        second.close()
        assert tenants.stats()["listening"] == []
        globex.close()


def test_engines_are_lazy_reused_and_release_connections_when_idle(cluster: Cluster) -> None:
    name = cluster.own["acme"]
    with rnb.connect(cluster.main, workers=0) as db:
        tenants = tenancy(db, pool_size=1, max_overflow=0)
        assert tenants.stats()["engines_opened"] == 0 and cluster.backends(name) == 0
        acme = tenants.open("acme")
        for _ in range(3):
            assert list(acme.read_sql("SELECT id FROM note ORDER BY id")["id"]) == [1]
        tenants.open("acme")
        tenants.open("globex").read_sql("SELECT 1")
        assert tenants.stats()["engines_opened"] == 1  # acme only, created once
        engine = acme.engine
        assert engine is tenants.open("acme").engine
        assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
        tenants.engines.idle_timeout = 0
        tenants.sweep()
        assert tenants.stats()["idle"] == 1
        assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]
        assert acme.read_sql("SELECT current_database() AS d")["d"][0] == name
        assert tenants.stats() | {"listening": []} == {
            "engines_opened": 1, "engines": 1, "idle": 0, "listening": [],
            "access_queries": tenants.stats()["access_queries"]}
    # the server notices the closed sockets on its own time
    eventually(lambda: cluster.backends(name) == 0, 10, "the tenant's backends closing")


# -- access control -------------------------------------------------------------------------

@pytest.fixture
def statements() -> Iterator[dict[str, list[str]]]:
    """Every statement any SQLAlchemy engine sends, by database name."""
    seen: dict[str, list[str]] = defaultdict(list)

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen[str(conn.engine.url.database)].append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    yield seen
    event.remove(Engine, "before_cursor_execute", record)


def test_user_without_membership_is_denied_and_no_tenant_sql_runs(
        cluster: Cluster, statements: dict[str, list[str]]) -> None:
    calls: list[str] = []
    with rnb.connect(cluster.main, workers=0) as db:
        tenants = tenancy(db, user="mallory")
        notes = define_notes(db, calls)
        for tenant in ("acme", "globex"):
            line = f"user 'mallory' may not access tenant '{tenant}'"
            with pytest.raises(rnb.TenantAccessDenied, match=line):
                tenants.open(tenant)
            with pytest.raises(rnb.TenantAccessDenied, match=line):
                notes.live(org=tenant, tenant=tenant)
            with pytest.raises(rnb.TenantAccessDenied, match=line), db.tenant(tenant):
                notes(org=tenant)
            with pytest.raises(rnb.TenantAccessDenied, match=line):
                tenants.use(tenant)  # what `%reactive tenant` calls
        assert tenants.list().empty
        assert calls == []
        assert tenants.stats()["engines_opened"] == 0
    for name in cluster.own.values():
        assert statements[name] == []
        assert cluster.backends(name) == 0
    read = [s for s in statements[cluster.main_name] if "note" in s]
    assert read == []  # the shared tenant's data was never read either


def test_list_shows_the_tenants_the_user_may_open(cluster: Cluster) -> None:
    with rnb.connect(cluster.main, workers=0) as db:
        alice = tenancy(db, user="alice")
        assert list(alice.list()["tenant"]) == ["acme", "globex", "hooli"]
        with pytest.raises(rnb.TenantNotFound, match="did you mean 'acme'"):
            alice.open("acm")
        bob = tenancy(db, user="bob")  # replaces alice's
        assert alice.closed
        assert list(bob.list()["tenant"]) == ["globex"]
        with pytest.raises(rnb.TenantNotFound) as info:  # no hint at a tenant bob can't see
            bob.open("acm")
        assert "did you mean" not in str(info.value)
        listing = bob.live()
        db.scheduler.run_until_idle()
        assert list(listing.df["tenant"]) == ["globex"]
        db.execute("INSERT INTO membership VALUES ('bob', 'hooli')")
        db.scheduler.run_until_idle()
        assert list(listing.df["tenant"]) == ["globex", "hooli"]
        assert bob.open("hooli").read_sql("SELECT count(*) AS n FROM note")["n"][0] == 1


def test_revoking_a_membership_clears_the_live_query(cluster: Cluster) -> None:
    with rnb.connect(cluster.main, workers=0, min_interval=0) as db:
        tenants = tenancy(db)
        notes = define_notes(db)
        acme = tenants.open("acme").live(notes, org="acme")
        globex = tenants.open("globex").live(notes, org="globex")
        db.scheduler.run_until_idle()
        assert acme.df is not None and acme.status == "fresh"
        db.execute("DELETE FROM membership WHERE user_id = 'alice' AND organization_id = 'acme'")
        line = "TenantAccessDenied: user 'alice' may not access tenant 'acme'"
        assert tenants.recheck() == {"acme": line}
        assert (acme.status, acme.error, acme.df) == ("error", line, None)
        assert globex.status == "fresh" and globex.df is not None
        # Stopped: a later change to acme refreshes nothing and shows no data.
        tried = acme.attempts
        db.invalidate("note", tenant="acme")
        db.scheduler.run_until_idle()
        assert acme.attempts == tried and acme.df is None
        with pytest.raises(TimeoutError, match="TenantAccessDenied"):
            acme.wait(0.1)
        with pytest.raises(rnb.TenantAccessDenied):
            tenants.open("acme")


def test_a_refresh_before_the_recheck_is_refused_and_cleared(cluster: Cluster) -> None:
    with rnb.connect(cluster.main, workers=0, min_interval=0) as db:
        tenants = tenancy(db)
        acme = tenants.open("acme")
        engine = acme.engine

        @db.reactive(dependencies=["note"])
        def raw() -> pd.DataFrame:  # reads through an engine it holds, not db.read_sql
            with engine.connect() as conn:
                return pd.read_sql(text("SELECT id FROM note ORDER BY id"), conn)

        held = acme.live(raw)
        db.scheduler.run_until_idle()
        seen: list[list[int]] = []
        held.observe(lambda change: seen.append(
            [] if change["new"] is None else list(change["new"]["id"])), names=["df"])
        db.execute("DELETE FROM membership WHERE user_id = 'alice' AND organization_id = 'acme'")
        cluster.plain(cluster.own["acme"], "INSERT INTO note VALUES (2, 'acme', 'new')")
        db.invalidate("note", tenant="acme")
        db.scheduler.run_until_idle()  # before any re-check: the worker checks the tenant
        assert held.status == "error" and held.df is None
        assert seen == [[]]  # cleared, and the new row was never shown
        assert tenants.recheck() == {}  # already stopped
        with pytest.raises(rnb.TenantAccessDenied):  # a held handle is re-checked too
            acme.read_sql("SELECT 1")


def test_revocation_by_another_client_stops_the_live_query_at_once(cluster: Cluster) -> None:
    with rnb.connect(cluster.main, workers=2, min_interval=0) as db:
        tenants = tenancy(db)
        notes = define_notes(db)
        tenants.install_triggers()  # the main database's organization and membership too
        hooli = tenants.open("hooli").live(notes, org="hooli").wait(10)
        globex = tenants.open("globex").live(notes, org="globex").wait(10)
        cleared = when(hooli, lambda live: live.status == "error" and live.df is None)
        cluster.plain(cluster.main_name, "DELETE FROM membership WHERE user_id = 'alice' "
                                         "AND organization_id = 'hooli'")
        assert cleared.wait(10), (hooli.status, hooli.error)
        assert "TenantAccessDenied" in (hooli.error or "")
        assert globex.status == "fresh" and globex.df is not None


def test_a_revocation_nobody_announced_clears_the_live_query_at_its_next_refresh(
        cluster: Cluster) -> None:
    with rnb.connect(cluster.main, workers=0, min_interval=0) as db:
        tenants = tenancy(db, access_ttl=0)  # no triggers on membership: only the TTL
        notes = define_notes(db)
        acme = tenants.open("acme").live(notes, org="acme")
        db.scheduler.run_until_idle()
        assert acme.df is not None
        cluster.plain(cluster.main_name, "DELETE FROM membership WHERE user_id = 'alice' "
                                         "AND organization_id = 'acme'")
        assert tenants.recheck() == {}  # nothing announced it
        db.invalidate("note", tenant="acme")  # the next refresh asks again and is refused
        db.scheduler.run_until_idle()
        assert acme.status == "error" and acme.df is None
        assert "TenantAccessDenied" in (acme.error or "")


def test_a_deleted_tenant_is_closed_at_the_next_change(cluster: Cluster) -> None:
    with rnb.connect(cluster.main, workers=0, min_interval=0) as db:
        tenants = tenancy(db)
        notes = define_notes(db)
        hooli = tenants.open("hooli").live(notes, org="hooli")
        acme = tenants.open("acme").live(notes, org="acme")
        db.scheduler.run_until_idle()
        assert sorted(tenants.engines.tenants()) == ["acme", "hooli"]
        db.execute("DELETE FROM organization WHERE id = 'hooli'")
        stopped = tenants.recheck()
        assert list(stopped) == ["hooli"] and "TenantNotFound" in stopped["hooli"]
        assert hooli.df is None and hooli.status == "error"
        assert tenants.engines.tenants() == ["acme"] and acme.status == "fresh"
        with pytest.raises(rnb.TenantNotFound):
            tenants.open("hooli")


# -- resolution -----------------------------------------------------------------------------

def pg_databases() -> list[str]:
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        return sorted(r[0] for r in conn.execute("SELECT datname FROM pg_database"))


def test_unknown_tenant_and_missing_database_create_nothing(cluster: Cluster) -> None:
    missing = f"rnb_missing_{uuid.uuid4().hex[:10]}"
    # A tenant whose id is a database's name, but the lookup says "shared": the id is
    # never used as a database name.
    cluster.plain(cluster.main_name, "INSERT INTO organization VALUES "
                  "('umbrella', 'Umbrella', %(missing)s), "
                  "('evil', 'Evil', 'postgres?host=elsewhere'), "
                  "(%(named)s, 'Named', NULL)",
                  {"missing": missing, "named": cluster.own["hooli"]})
    before = pg_databases()
    with rnb.connect(cluster.main, workers=0) as db:
        tenants = db.tenancy(database=DATABASE, user="alice")  # no access query: all open
        notes = define_notes(db)
        with pytest.raises(rnb.TenantNotFound, match=r"unknown tenant 'acm' .*'acme'"):
            tenants.open("acm")
        with pytest.raises(TenantDatabaseMissing,
                           match=f"tenant 'umbrella': its database '{missing}' does not "
                                 "exist") as info:
            tenants.open("umbrella")
        assert isinstance(info.value, rnb.TenantNotFound)
        with pytest.raises(rnb.TenantNotFound, match=missing):
            notes.live(org="umbrella", tenant="umbrella")
        with pytest.raises(rnb.TenantNotFound, match=missing), db.tenant("umbrella"):
            pass
        with pytest.raises(ConfigError, match="not a plain identifier"):
            tenants.open("evil")
        named = tenants.open(cluster.own["hooli"])
        assert named.database is None
        assert named.read_sql("SELECT current_database() AS d")["d"][0] == cluster.main_name
        assert tenants.stats()["engines_opened"] == 0
    assert pg_databases() == before


def test_bad_tenancy_options_are_one_config_error(cluster: Cluster) -> None:
    with rnb.connect(cluster.main, workers=0) as db:
        with pytest.raises(ConfigError, match="url= must contain"):
            db.tenancy(database=DATABASE, url="postgresql+psycopg://127.0.0.1/acme")
        with pytest.raises(ConfigError, match="access_ttl: expected a number"):
            db.tenancy(database=DATABASE, access_ttl="5")  # type: ignore[arg-type]
        with pytest.raises(rnb.RelationError, match="organisation"):
            db.tenancy(database="SELECT database_name FROM organisation WHERE id = :tenant")
        with pytest.raises(ConfigError, match="cannot derive the list"):
            db.tenancy(database="SELECT 'x'")
        assert db.tenant_directory is None


def test_user_defaults_to_the_jupyterhub_user(cluster: Cluster,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_USER", "bob")
    with rnb.connect(cluster.main, workers=0) as db:
        tenants = db.tenancy(database=DATABASE, access=ACCESS)
        assert tenants.user == "bob"
        assert list(tenants.list()["tenant"]) == ["globex"]
        monkeypatch.delenv("JUPYTERHUB_USER")
        import getpass

        assert db.tenancy(database=DATABASE, access=ACCESS).user == getpass.getuser()


# -- across processes (Redis) ---------------------------------------------------------------

OTHER_KERNEL = """
import sys
import reactive_nb as rnb
url, redis, prefix, sql = sys.argv[1:]
with rnb.connect(url, redis=redis, key_prefix=prefix, capture="local", workers=0) as db:
    tenants = db.tenancy(database={database!r}, access={access!r}, user="alice")
    if sql.startswith("acme:"):
        tenants.open("acme").execute(sql[5:])
    else:
        db.execute(sql)
"""


def other_kernel(cluster: Cluster, redis_url: str, prefix: str, sql: str) -> None:
    """Run ``sql`` from another process using reactive_nb on the same Redis (``acme:``
    prefix: through acme's handle there)."""
    import subprocess
    import sys
    from pathlib import Path

    script = OTHER_KERNEL.format(database=DATABASE, access=ACCESS)
    done = subprocess.run([sys.executable, "-c", script, cluster.main, redis_url, prefix, sql],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr


def test_another_kernels_writes_and_revocations_reach_this_one(
        cluster: Cluster, redis_url: str, redis_prefix: str) -> None:
    """Another process on the same Redis: its write through acme's database refreshes only
    acme's live query here, and its revocation of a membership stops ours (both arrive
    over the Redis bus: no trigger is installed)."""
    with rnb.connect(cluster.main, workers=1, min_interval=0, redis=redis_url,
                     key_prefix=redis_prefix) as db:
        tenants = tenancy(db)
        notes = define_notes(db)
        lives = {t: tenants.open(t).live(notes, org=t).wait(10) for t in ORGS}
        before = attempts(lives)
        refreshed = when(lives["acme"], lambda live: live.df is not None
                         and 2 in set(live.df["id"]))
        other_kernel(cluster, redis_url, redis_prefix,
                     "acme:INSERT INTO note VALUES (2, 'acme', 'remote')")
        assert refreshed.wait(10), lives["acme"].df
        assert delta(attempts(lives), before)["hooli"] == 0
        assert delta(attempts(lives), before)["globex"] == 0
        cleared = when(lives["globex"], lambda live: live.df is None)
        other_kernel(cluster, redis_url, redis_prefix, "DELETE FROM membership WHERE "
                     "user_id = 'alice' AND organization_id = 'globex'")
        assert cleared.wait(10), lives["globex"].status
        assert lives["globex"].status == "error"
        assert lives["hooli"].df is not None and lives["hooli"].status == "fresh"


def test_cli_installs_triggers_in_every_tenant_database(cluster: Cluster) -> None:
    """``reactive-nb install-triggers TEMPLATE --tenants-from MAIN --database-query SQL``
    installs capture in each tenant's own database (and on the main directory tables);
    without --database-query it is one line and exit 2."""
    import subprocess
    import sys

    from reactive_nb.capture.postgres import installed_tables

    template = pg_url_of("{database}")
    query = "SELECT database_name FROM organization WHERE id = :tenant"
    base = [sys.executable, "-m", "reactive_nb.ui.cli", "install-triggers", template,
            "--tenants-from", cluster.main]
    done = subprocess.run([*base, "--database-query", query], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in cluster.own.values():
        assert f"{name}: change capture on 1 table(s): note" in done.stdout
        engine = create_engine(pg_url_of(name))
        try:
            assert "note" in installed_tables(engine)
        finally:
            engine.dispose()
    refused = subprocess.run(base, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "--database-query" in refused.stderr
