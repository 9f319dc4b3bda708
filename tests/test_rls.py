"""Row-level security with ``db.tenancy(rls=True)``, and tenant isolation as a property.

The shared (main) database has a real RLS policy on ``note`` written against
``current_setting('reactive_nb.tenant', true)``; ReactiveDB connects as an ordinary role
created for the test (superusers and table owners bypass RLS), dropped afterwards.
``globex`` and ``initech`` live on the shared database, ``acme`` and ``hooli`` in
databases of their own (``tests.test_tenancy.build_cluster``).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import event

import reactive_nb as rnb
from tests.conftest import PG_HOST, PG_PORT, need_service
from tests.test_tenancy import ACCESS, DATABASE, Cluster, admin, build_cluster, pg_url_of

TENANTS = ("acme", "hooli", "globex", "initech")
SHARED = ("globex", "initech")
POLICY = """
ALTER TABLE note ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON note
    USING (organization_id = current_setting('reactive_nb.tenant', true))
    WITH CHECK (organization_id = current_setting('reactive_nb.tenant', true))
"""


@pytest.fixture
def role() -> Iterator[str]:
    """An ordinary login role (no superuser, owns nothing), dropped after the databases."""
    need_service("PostgreSQL", PG_HOST, PG_PORT)
    name = f"rnb_rls_{uuid.uuid4().hex[:10]}"
    admin(f'CREATE ROLE "{name}" LOGIN NOSUPERUSER NOBYPASSRLS')
    yield name
    admin(f'DROP ROLE IF EXISTS "{name}"')


@pytest.fixture
def rls_cluster(role: str, pg_url: str) -> Iterator[tuple[Cluster, str]]:
    """The cluster, the policy on the shared ``note``, grants to ``role``; yields the
    cluster and the main database's URL as ``role``."""
    built, drop = build_cluster(
        pg_url, extra_orgs=(("initech", None),),
        shared_rows=((1, "globex"), (2, "globex"), (3, "initech")))
    try:
        for database in (built.main_name, *built.own.values()):
            built.plain(database, f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN '
                                  f'SCHEMA public TO "{role}"')
        built.plain(built.main_name, POLICY)
        yield built, pg_url_of(built.main_name, role)
    finally:
        drop()


def define_everything(db: rnb.ReactiveDB) -> rnb.ReactiveFunction:
    @db.reactive(dependencies=["note"])
    def everything() -> pd.DataFrame:  # no WHERE: the policy (or the database) filters
        return db.read_sql("SELECT id, organization_id FROM note ORDER BY id")

    return everything


def test_rls_filters_the_rows_of_a_handler_without_where(
        rls_cluster: tuple[Cluster, str]) -> None:
    _, url = rls_cluster
    with rnb.connect(url, workers=0, min_interval=0) as db:
        tenants = db.tenancy(database=DATABASE, access=ACCESS, user="alice", rls=True)
        everything = define_everything(db)
        globex, initech = tenants.open("globex"), tenants.open("initech")
        assert list(globex.call(everything)["id"]) == [1, 2]
        assert list(initech.call(everything)["id"]) == [3]
        assert everything().empty  # unscoped: the setting is unset, the policy fails closed
        lives = {t: tenants.open(t).live(everything) for t in TENANTS}
        db.scheduler.run_until_idle()
        for tenant, live in lives.items():
            assert set(live.df["organization_id"]) == {tenant}
        # Writes run as the tenant too: the policy's WITH CHECK accepts its own rows...
        globex.execute("INSERT INTO note VALUES (4, 'globex', 'x')")
        db.scheduler.run_until_idle()
        assert list(lives["globex"].df["id"]) == [1, 2, 4]
        assert list(lives["initech"].df["id"]) == [3]
        # ...and refuses another tenant's.
        with pytest.raises(Exception, match="row-level security"):
            globex.execute("INSERT INTO note VALUES (5, 'initech', 'x')")
        # A session of the handle sets the tenant wherever it is used.
        from sqlalchemy import text

        with initech.session() as session:
            rows = session.execute(text("SELECT id FROM note ORDER BY id")).all()
        assert [r[0] for r in rows] == [3]


def test_without_rls_the_same_handler_sees_no_row(rls_cluster: tuple[Cluster, str]) -> None:
    _, url = rls_cluster
    with rnb.connect(url, workers=0) as db:
        tenants = db.tenancy(database=DATABASE, access=ACCESS, user="alice")
        everything = define_everything(db)
        assert tenants.open("globex").call(everything).empty


def test_the_tenant_is_bound_and_transaction_local(rls_cluster: tuple[Cluster, str]) -> None:
    _, url = rls_cluster
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        sent.append((statement, parameters))

    with rnb.connect(url, workers=0) as db:
        tenants = db.tenancy(database=DATABASE, access=ACCESS, user="alice", rls=True)
        event.listen(db.engine, "before_cursor_execute", record)
        try:
            setting = "SELECT current_setting('reactive_nb.tenant', true) AS t"
            assert tenants.open("globex").read_sql(setting)["t"][0] == "globex"
            # The pooled connection forgot it (a custom setting once set in a session
            # reads '' afterwards, NULL before).
            assert db.read_sql(setting)["t"][0] in ("", None)
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
    sets = [(s, p) for s, p in sent if "set_config" in s]
    assert sets == [("SELECT set_config('reactive_nb.tenant', %(tenant)s, true)",
                     {"tenant": "globex"})]


def test_rls_needs_postgresql(sqlite_url: str) -> None:
    with rnb.connect(sqlite_url, workers=0) as db:
        db.execute("CREATE TABLE organization (id TEXT PRIMARY KEY)")
        with pytest.raises(rnb.ConfigError, match="needs PostgreSQL"):
            db.tenancy(list="SELECT id FROM organization", rls=True)


# -- isolation as a property ----------------------------------------------------------------

_ids = itertools.count(1000)

OPS = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(TENANTS), st.sampled_from(["handle", "plain"])),
    st.tuples(st.just("open"), st.sampled_from(TENANTS)),
    st.tuples(st.just("close"), st.sampled_from(TENANTS)),
    st.tuples(st.just("call"), st.sampled_from(TENANTS), st.sampled_from(TENANTS)),
    st.tuples(st.just("live"), st.sampled_from(TENANTS), st.sampled_from(TENANTS)),
    st.tuples(st.just("step")),
)


def only(frame: pd.DataFrame | None, tenant: str, where: str) -> None:
    if frame is not None and len(frame):
        leaked = set(frame["organization_id"]) - {tenant}
        assert not leaked, f"{where}: {tenant} saw rows of {sorted(leaked)}"


@settings(deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(OPS, max_size=20))
def test_no_frame_ever_shows_another_tenants_rows(rls_cluster: tuple[Cluster, str],
                                                  ops: list[tuple[str, ...]]) -> None:
    """Random interleavings of opens, closes, writes (through a handle, or by another
    client), cached calls and live queries -- with inputs naming *other* tenants -- never
    give a tenant a frame holding another tenant's rows."""
    cluster, url = rls_cluster
    with rnb.connect(url, workers=0, min_interval=0) as db:
        tenants = db.tenancy(database=DATABASE, access=ACCESS, user="alice", rls=True)
        everything = define_everything(db)

        @db.reactive(dependencies=["note"])
        def by_org(org: str) -> pd.DataFrame:  # the input may name any tenant
            return db.read_sql("SELECT id, organization_id FROM note "
                               "WHERE organization_id = :o ORDER BY id", o=org)

        handles: dict[str, Any] = {}
        lives: list[tuple[str, rnb.LiveQuery]] = []

        def handle(tenant: str) -> Any:
            if tenant not in handles:
                handles[tenant] = tenants.open(tenant)
            return handles[tenant]

        for op in ops:
            note(repr(op))
            kind, args = op[0], op[1:]
            if kind == "write":
                tenant, path = args
                row = {"id": next(_ids), "org": tenant}
                if path == "handle":
                    handle(tenant).execute("INSERT INTO note VALUES (:id, :org, 'w')", row)
                else:
                    database = cluster.own.get(tenant, cluster.main_name)
                    cluster.plain(database, "INSERT INTO note VALUES (%(id)s, %(org)s, 'p')",
                                  row)
            elif kind == "open":
                handle(args[0])
            elif kind == "close":
                if args[0] in handles:
                    handles.pop(args[0]).close()
            elif kind == "call":
                tenant, named = args
                only(handle(tenant).call(by_org, org=named), tenant, "by_org call")
                only(handle(tenant).call(everything), tenant, "everything call")
            elif kind == "live":
                tenant, named = args
                lives.append((tenant, handle(tenant).live(by_org, org=named)))
                lives.append((tenant, handle(tenant).live(everything)))
            else:
                db.scheduler.run_until_idle()
            for tenant, live in lives:
                only(live.df, tenant, f"live {live.key}")
        db.scheduler.run_until_idle()
        for tenant, live in lives:
            only(live.df, tenant, f"live {live.key}")
            assert live.status == "fresh", (live.key, live.status, live.error)

