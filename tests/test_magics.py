"""The IPython magics in a real IPython shell, on a SQLite file.

Covers %load_ext / %unload_ext / %reload_ext, %reactive connect, %%reactive (bound
parameters, one-line errors, replacing a cell's live query), status, refresh, priorities,
close, and that loading the extension stays light (a fresh subprocess).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import teamhub
from IPython.core.error import UsageError
from IPython.testing import globalipapp
from IPython.utils.capture import capture_output

from reactive_nb.live.query import LiveQuery
from reactive_nb.ui.magics.parameters import parameters

ROOT = Path(__file__).resolve().parent.parent
AGENTS = ("%%reactive agents --no-display\n"
          "SELECT id, name FROM agent WHERE organization_id = :org ORDER BY id")


def our_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name.startswith("reactive_nb-") and t.is_alive()]


def settle_threads(timeout: float = 5.0) -> list[str]:
    """Join our threads that are stopping; return the names still alive after ``timeout``."""
    for thread in [t for t in threading.enumerate() if t.name.startswith("reactive_nb-")]:
        thread.join(timeout=timeout)
    return our_threads()


@pytest.fixture
def ip(sqlite_url: str) -> Iterator[Any]:
    """The global IPython shell with reactive_nb loaded and connected to a teamhub file."""
    teamhub.create(sqlite_url)
    globalipapp.start_ipython()  # once per process; later calls return None
    shell = globalipapp.get_ipython()
    shell.run_line_magic("load_ext", "reactive_nb")
    shell.user_ns["URL"] = sqlite_url
    try:
        yield shell
    finally:
        if "reactive_nb" in shell.extension_manager.loaded:
            shell.run_line_magic("unload_ext", "reactive_nb")
        shell.reset(new_session=False)


def run(shell: Any, source: str) -> Any:
    result = shell.run_cell(source)
    if result.error_in_exec is not None or result.error_before_exec is not None:
        raise AssertionError(f"cell failed: {result.error_in_exec or result.error_before_exec}")
    return result


def connect(shell: Any) -> Any:
    run(shell, "%reactive connect $URL")
    return shell.user_ns["rnb_db"]


def error_lines(shell: Any, source: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Run a cell expected to fail with a UsageError; return what it printed on stderr."""
    capsys.readouterr()
    result = shell.run_cell(source)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.strip()]


def test_cell_defines_a_live_query_that_follows_writes(ip: Any) -> None:
    db = connect(ip)
    ip.user_ns["org"] = "acme"
    run(ip, AGENTS)
    live = ip.user_ns["agents"]
    assert isinstance(live, LiveQuery)
    assert live.function.name == "agents"
    assert live.inputs == {"org": "acme"}
    assert '"org":"acme"' in live.key
    assert live.function.watched - {"*"} == {"agent"}
    assert list(live.wait(5).df["name"]) == ["ada", "bob"]

    db.execute("INSERT INTO agent (id, organization_id, name) VALUES (9, 'acme', 'zed')")
    assert list(live.wait(5).df["name"]) == ["ada", "bob", "zed"]


def test_a_cell_runs_its_sql_once(ip: Any) -> None:
    """The cell's own run (which learns the dependencies) is the live query's first frame:
    the live query starts fresh from it instead of running the SQL a second time."""
    db = connect(ip)
    ip.user_ns["org"] = "acme"
    run(ip, AGENTS)
    live = ip.user_ns["agents"]
    assert live.status == "fresh" and list(live.df["name"]) == ["ada", "bob"]
    db.scheduler.run_until_idle()  # anything due would run now (the workers may race it)
    assert live.function.stats.runs == 1 and live.attempts == 0


def test_parameters_are_bound_never_formatted(ip: Any) -> None:
    db = connect(ip)
    for value in ("' OR '1'='1", "'; DROP TABLE agent; --"):
        ip.user_ns["org"] = value
        run(ip, AGENTS)
        assert ip.user_ns["agents"].wait(5).df.empty, value  # formatted, the first would match all
    assert int(db.read_sql("SELECT COUNT(*) AS n FROM agent")["n"][0]) == 3


def test_parameters_found_by_the_tokenizer() -> None:
    assert parameters("SELECT a::int FROM t WHERE b = :org AND c = (:n)::int", "x") == ["org", "n"]
    assert parameters("SELECT 1 WHERE t = '12:30' AND u = :u AND u2 = :u", "x") == ["u"]
    with pytest.raises(UsageError, match="class"):
        parameters("SELECT :class", "x")


def test_missing_variable_is_one_line_naming_it(
        ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    connect(ip)
    lines = error_lines(ip, "%%reactive q\nSELECT * FROM agent WHERE organization_id = :team_name",
                        capsys)
    assert len(lines) == 1, lines
    assert ":team_name" in lines[0] and lines[0].startswith("UsageError:")
    assert "q" not in ip.user_ns


def test_sql_error_shows_the_database_message(
        ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    connect(ip)
    lines = error_lines(ip, "%%reactive q\nSELECT * FROM agentz", capsys)
    assert lines == ["UsageError: %%reactive q: no such table: agentz"]


def test_rerunning_a_cell_closes_the_previous_live_query(ip: Any) -> None:
    db = connect(ip)
    ip.user_ns["org"] = "acme"
    run(ip, AGENTS)
    first = ip.user_ns["agents"].wait(5)
    run(ip, AGENTS.replace("ORDER BY id", "ORDER BY id DESC"))
    second = ip.user_ns["agents"].wait(5)
    assert second is not first
    assert first.closed and not second.closed
    assert list(second.df["name"]) == ["bob", "ada"]  # the new SQL, not the old cached frame

    db.execute("INSERT INTO agent (id, organization_id, name) VALUES (9, 'acme', 'zed')")
    assert list(second.wait(5).df["name"]) == ["zed", "bob", "ada"]
    assert len(first.df) == 2  # closed: no longer refreshed


def test_cell_displays_the_widget_and_sets_the_key(ip: Any) -> None:
    connect(ip)
    ip.user_ns["org"] = "acme"
    with capture_output() as captured:
        run(ip, AGENTS.replace("--no-display", "--key id --priority high"))
    assert "application/vnd.jupyter.widget-view+json" in captured.outputs[0].data
    live = ip.user_ns["agents"]
    assert live.primary_key == ("id",)
    assert live.priority == "high"


def test_key_must_name_a_column(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    connect(ip)
    ip.user_ns["org"] = "acme"
    lines = error_lines(ip, AGENTS.replace("--no-display", "--key ident"), capsys)
    assert lines == ["UsageError: %%reactive agents: --key 'ident' is not a column of the "
                     "result (id, name)"]


def test_declared_dependencies_and_ttl(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    connect(ip)
    run(ip, "%%reactive counts --deps agent,tool --ttl 60 --no-display\n"
            "SELECT COUNT(*) AS n FROM agent")
    fn = ip.user_ns["counts"].function
    assert fn.watched - {"*"} == {"agent", "tool"} and fn.ttl == 60
    lines = error_lines(ip, "%%reactive c2 --deps agnet\nSELECT 1", capsys)
    assert len(lines) == 1 and "did you mean 'agent'" in lines[0]


def test_status_refresh_priorities(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    db = connect(ip)
    ip.user_ns["org"] = "acme"
    run(ip, AGENTS)
    live = ip.user_ns["agents"].wait(5)

    with capture_output() as captured, pd.option_context("display.width", 1000,
                                                         "display.max_columns", 20):
        run(ip, "%reactive status")
    shown = captured.outputs[0].data["text/plain"]
    for text in ("watched tables", "hit rate", "last run ms", "visible", "agents", "fresh",
                 '{"org": "acme"}'):
        assert text in shown

    refreshed = threading.Event()
    live.observe(lambda change: refreshed.set(), names=["runs"])
    runs = live.runs
    run(ip, "%reactive refresh agents")
    assert refreshed.wait(5) and live.runs == runs + 1
    refreshed.clear()
    run(ip, "%reactive refresh --all")
    assert refreshed.wait(5)
    lines = error_lines(ip, "%reactive refresh agnets", capsys)
    assert lines == ["UsageError: %reactive refresh: no live query named 'agnets' "
                     "(did you mean 'agents'?)"]

    run(ip, "%reactive priorities agents other")
    assert db.scheduler.priorities == ["agents", "other"]


def test_close_closes_everything(ip: Any) -> None:
    db = connect(ip)
    ip.user_ns["org"] = "acme"
    run(ip, AGENTS)
    live = ip.user_ns["agents"].wait(5)
    run(ip, "%reactive close")
    assert live.closed and db.closed and "rnb_db" not in ip.user_ns
    assert settle_threads() == []


def test_usage_and_unknown_commands(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for line in ("%reactive", "%reactive --help"):
        capsys.readouterr()
        run(ip, line)
        assert "%%reactive NAME" in capsys.readouterr().out
    assert len(error_lines(ip, "%reactive frobnicate", capsys)) == 1
    assert len(error_lines(ip, "%reactive connect --workers many", capsys)) == 1
    lines = error_lines(ip, "%%reactive agents\nSELECT 1", capsys)
    assert lines[0].startswith("UsageError: not connected")


def test_connect_from_environment_and_reconnect(
        ip: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("REACTIVE_NB_URL", raising=False)
    monkeypatch.delenv("REACTIVE_NB_REDIS", raising=False)
    assert "REACTIVE_NB_URL" in error_lines(ip, "%reactive connect", capsys)[0]
    monkeypatch.setenv("REACTIVE_NB_URL", ip.user_ns["URL"])
    run(ip, "%reactive connect")
    first = ip.user_ns["rnb_db"]
    assert str(first.engine.url) == ip.user_ns["URL"]
    ip.user_ns["org"] = "acme"
    run(ip, AGENTS)
    live = ip.user_ns["agents"]
    run(ip, "%reactive connect --workers 2 --min-interval 0.01")
    second = ip.user_ns["rnb_db"]
    assert second is not first and first.closed and live.closed and not second.closed
    # A failed reconnect keeps the working connection.
    lines = error_lines(ip, "%reactive connect nosuchdialect://x", capsys)
    assert len(lines) == 1 and not second.closed and ip.user_ns["rnb_db"] is second


def test_connect_with_a_relations_file(
        ip: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rel.yaml").write_text("agent: [message]\n")
    (tmp_path / "bad.json").write_text(json.dumps({"agent": ["mesage"]}))
    ip.user_ns["REL"], ip.user_ns["BAD"] = str(tmp_path / "rel.yaml"), str(tmp_path / "bad.json")
    run(ip, "%reactive connect $URL --relations $REL")
    run(ip, "%%reactive msgs --no-display\nSELECT * FROM message")
    assert ip.user_ns["msgs"].function.watched - {"*"} == {"message", "agent"}
    lines = error_lines(ip, "%reactive connect $URL --relations $BAD", capsys)
    assert len(lines) == 1 and "did you mean 'message'" in lines[0]


def test_unload_stops_every_thread_and_removes_the_magics(
        ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    connect(ip)
    ip.user_ns["org"] = "acme"
    with capture_output():
        run(ip, AGENTS.replace(" --no-display", ""))  # a widget too: its flush thread
    live = ip.user_ns["agents"].wait(5)
    assert our_threads()
    ip.run_line_magic("unload_ext", "reactive_nb")
    assert live.closed and settle_threads() == []
    assert "Line magic function `%reactive` not found" in error_lines(ip, "%reactive", capsys)[0]


def test_reload_closes_the_old_state_and_works(ip: Any) -> None:
    old_db = connect(ip)
    ip.user_ns["org"] = "acme"
    run(ip, AGENTS)
    old = ip.user_ns["agents"].wait(5)
    ip.run_line_magic("reload_ext", "reactive_nb")
    assert old.closed and old_db.closed and settle_threads() == []
    db = connect(ip)
    run(ip, AGENTS)
    db.execute("INSERT INTO agent (id, organization_id, name) VALUES (9, 'acme', 'zed')")
    assert list(ip.user_ns["agents"].wait(5).df["name"]) == ["ada", "bob", "zed"]


def test_load_ext_is_light() -> None:
    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "import reactive_nb\n"
        "ip = InteractiveShell.instance()\n"
        "ip.run_line_magic('load_ext', 'reactive_nb')\n"
        "assert 'reactive' in ip.magics_manager.magics['cell']\n"
        "print(sorted(m for m in ('jupyterlab', 'pandas', 'sqlalchemy', 'anywidget', 'redis')"
        " if m in sys.modules))\n"
    )
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


# -- bad input: names and parameters ---------------------------------------------------------


@pytest.mark.parametrize("name, reason", [
    ("rnb_db", "the connection"),
    ("class", "a Python keyword"),
    ("list", "a Python builtin"),
    ("print", "a Python builtin"),
    ("In", "IPython's own variable"),
    ("get_ipython", "IPython's own variable"),
    ("org", "the parameter :org"),
])
def test_name_may_not_shadow_the_connection_keywords_or_builtins(
        ip: Any, capsys: pytest.CaptureFixture[str], name: str, reason: str) -> None:
    db = connect(ip)
    ip.user_ns["org"] = "acme"
    before = dict(ip.user_ns)
    lines = error_lines(ip, f"%%reactive {name} --no-display\n"
                            "SELECT id FROM agent WHERE organization_id = :org", capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"UsageError: %%reactive {name}: ") and reason in lines[0], lines
    assert ip.user_ns["rnb_db"] is db and ip.user_ns["org"] == "acme"
    assert ip.user_ns.get(name) is before.get(name)
    assert db.functions == {}  # nothing was defined, nothing ran


def test_name_may_not_overwrite_a_connection_bound_to_another_variable(
        ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run(ip, "db = %reactive connect $URL")
    lines = error_lines(ip, "%%reactive db\nSELECT 1", capsys)
    assert len(lines) == 1 and "the connection" in lines[0], lines
    assert ip.user_ns["db"] is ip.user_ns["rnb_db"]


def test_parameters_are_found_outside_literals_identifiers_and_comments() -> None:
    sql = ("SELECT ':org' AS x, id AS \"a:b\", E'\\' :esc' AS e -- :comment\n"
           "/* :block */ FROM agent WHERE organization_id = :org AND n = :n::int")
    assert parameters(sql, "x", "postgres") == ["org", "n"]
    assert parameters(sql.replace("E'\\' :esc'", "'x'"), "x") == ["org", "n"]  # any dialect
    assert parameters("SELECT :org::text, '12:30', 'a:b:c' WHERE x = :other", "x") == [
        "org", "other"]


def test_colons_in_literals_identifiers_and_comments_are_sent_as_written(ip: Any) -> None:
    connect(ip)
    ip.user_ns["org"] = "acme"
    run(ip, "%%reactive labelled --no-display\n"
            "SELECT ':org' AS x, '12:30 :a:b' AS t, 'C\\:x' AS bs, id AS \"id:n\"\n"
            "FROM agent -- :nothing\n"
            "WHERE organization_id = :org /* not :this */ ORDER BY id")
    live = ip.user_ns["labelled"].wait(5)
    assert live.inputs == {"org": "acme"}
    assert live.df.to_dict("list") == {"x": [":org", ":org"], "t": ["12:30 :a:b"] * 2,
                                       "bs": ["C\\:x"] * 2, "id:n": [1, 2]}


def test_cast_after_a_parameter_on_postgresql(pg_url: str) -> None:
    teamhub.create(pg_url)
    globalipapp.start_ipython()
    shell = globalipapp.get_ipython()
    shell.run_line_magic("load_ext", "reactive_nb")
    try:
        shell.user_ns.update(URL=pg_url, org="acme", n="2")
        run(shell, "%reactive connect $URL")
        run(shell, "%%reactive cast --no-display\n"
                   "SELECT :org::text AS o, ':org::text' AS literal, id FROM agent\n"
                   "WHERE organization_id = :org::varchar AND id <= :n::int ORDER BY id")
        live = shell.user_ns["cast"].wait(5)
        assert live.inputs == {"org": "acme", "n": "2"}
        assert live.df.to_dict("list") == {"o": ["acme", "acme"],
                                           "literal": [":org::text"] * 2, "id": [1, 2]}
    finally:
        shell.run_line_magic("unload_ext", "reactive_nb")
        shell.reset(new_session=False)


# -- help, settings, wrong forms, status, tenants ----------------------------------------------


def test_cell_options_have_help(ip: Any) -> None:
    doc = ip.magics_manager.magics["cell"]["reactive"].__doc__
    for text in ("%%reactive", "--deps", "--priority", "--ttl", "--key", "--no-display",
                 "bound parameter"):
        assert text in doc, text
    with capture_output() as captured:
        ip.run_cell("%%reactive?")
    assert "--no-display" in captured.stdout and "%%reactive [--deps" in captured.stdout


def test_cell_option_errors_are_one_line(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    connect(ip)
    lines = error_lines(ip, "%%reactive q --priority urgent\nSELECT 1", capsys)
    assert len(lines) == 1 and lines[0].startswith("UsageError: %%reactive: ")
    assert "urgent" in lines[0] and "%%reactive?" in lines[0]


def test_config_sets_page_size_and_height_of_later_tables(ip: Any) -> None:
    connect(ip)
    ip.user_ns["org"] = "acme"
    cell = AGENTS.replace(" --no-display", "")
    with capture_output():
        run(ip, cell)
    first = ip.user_ns["agents"].widget()
    assert (first.page_size, first.height) == (50, None)
    run(ip, "%config ReactiveMagics.page_size = 20")
    run(ip, "%config ReactiveMagics.height = 400")
    assert ip.run_line_magic("config", "ReactiveMagics.page_size") == 20
    with capture_output():
        run(ip, cell)
    table = ip.user_ns["agents"].widget()
    assert (table.page_size, table.height) == (20, 400)
    assert (first.page_size, first.height) == (50, None)  # tables made before: unchanged


def test_template_placeholders_point_to_bound_parameters(
        ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    connect(ip)
    ip.user_ns["org"] = "acme"
    lines = error_lines(ip, "%%reactive q\nSELECT * FROM agent WHERE organization_id = "
                            "'{{org}}'", capsys)
    assert lines == ["UsageError: %%reactive q: {{org}} is not substituted; write :org "
                     "instead (a bound parameter read from the variable org)"]
    assert "q" not in ip.user_ns


def test_sql_on_the_line_points_to_the_cell_form(
        ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    connect(ip)
    for line in ("%reactive SELECT * FROM agent", "%reactive select 1",
                 "%reactive WITH x AS (SELECT 1) SELECT * FROM x"):
        lines = error_lines(ip, line, capsys)
        assert len(lines) == 1 and "%%reactive NAME" in lines[0], lines


def test_status_is_right_just_after_the_cell_ran(ip: Any) -> None:
    run(ip, "%reactive connect $URL --workers 0 --min-interval 0")  # refreshes when stepped
    db = ip.user_ns["rnb_db"]
    ip.user_ns["org"] = "acme"
    run(ip, AGENTS)
    magics = ip.magics_manager.registry["ReactiveMagics"]
    row = magics.status_frame().iloc[0]
    assert row["runs"] == 1  # the cell's own run
    assert row["last run ms"] is not None
    assert pd.isna(row["hit rate"])  # nothing was looked up yet: not a 0.0 hit rate
    # Declared dependencies: the cell's result is the live query's, fresh at once.
    run(ip, AGENTS.replace("agents --no-display", "declared --no-display --deps agent"))
    db.scheduler.run_until_idle()
    row = magics.status_frame().iloc[1]
    assert row["runs"] == 1 and row["status"] == "fresh" and pd.isna(row["hit rate"])
    db.execute("INSERT INTO agent (id, organization_id, name) VALUES (9, 'acme', 'zed')")
    db.scheduler.run_until_idle()
    row = magics.status_frame().iloc[1]
    assert row["name"] == "declared"
    assert row["runs"] == 2 and row["hit rate"] == 0.0  # one lookup, a miss (a write)


def test_tenant_switches_and_persists_across_cells(
        ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from reactive_nb.model.tenants import current_tenant

    db = connect(ip)
    db.tenants.add("acme")
    db.tenants.add("globex")
    run(ip, "%reactive tenant acme")
    assert current_tenant() == "acme"
    run(ip, "from reactive_nb.model.tenants import current_tenant\nseen = current_tenant()")
    assert ip.user_ns["seen"] == "acme"
    # A cell that awaits runs as an asyncio task, in a copy of the context: the tenant it
    # sets must still reach the next cell.
    run(ip, "import asyncio\nawait asyncio.sleep(0)\n%reactive tenant globex")
    run(ip, "seen = current_tenant()")
    assert ip.user_ns["seen"] == "globex"
    ip.user_ns["org"] = "globex"
    run(ip, AGENTS)
    assert ip.user_ns["agents"].tenant == "globex"
    lines = error_lines(ip, "%reactive tenant initech", capsys)
    assert len(lines) == 1 and lines[0].startswith("UsageError: %reactive tenant: "), lines
    run(ip, "seen = current_tenant()")
    assert ip.user_ns["seen"] == "globex"  # a refused tenant changes nothing
    run(ip, "%reactive tenant --none")
    run(ip, "seen = current_tenant()")
    assert ip.user_ns["seen"] == "__all__" or ip.user_ns["seen"] != "globex"
    with capture_output() as captured:
        run(ip, "%reactive tenants")
    assert "acme" in captured.stdout
    assert "globex" in captured.stdout
    assert len(error_lines(ip, "%reactive tenant", capsys)) == 1
    assert len(error_lines(ip, "%reactive tenant acme --none", capsys)) == 1


def test_tenant_through_the_tenancy_checks_access(
        ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from reactive_nb.model.tenants import current_tenant

    db = connect(ip)
    db.execute("CREATE TABLE membership (user_id TEXT, organization_id TEXT)")
    db.execute("INSERT INTO membership VALUES ('ann', 'acme')")
    db.tenancy(list="SELECT id FROM organization ORDER BY id",
               access="SELECT 1 FROM membership WHERE user_id = :user "
                      "AND organization_id = :tenant", user="ann")
    run(ip, "%reactive tenant acme")
    run(ip, "from reactive_nb.model.tenants import current_tenant\nseen = current_tenant()")
    assert ip.user_ns["seen"] == "acme"
    lines = error_lines(ip, "%reactive tenant globex", capsys)
    assert len(lines) == 1 and "globex" in lines[0], lines
    assert lines[0].startswith("UsageError: %reactive tenant: "), lines
    lines = error_lines(ip, "%reactive tenant initech", capsys)
    assert len(lines) == 1 and "initech" in lines[0], lines
    assert current_tenant() == "acme"
    with capture_output() as captured:
        run(ip, "%reactive tenants")
    shown = captured.stdout
    assert "acme" in shown and "globex" not in shown


def test_connect_says_once_when_other_processes_are_not_heard(
        sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    import reactive_nb as rnb

    teamhub.create(sqlite_url)  # a new database file: not told yet in this process
    other = f"sqlite:///{tmp_path}/other.db"
    teamhub.create(other)
    with caplog.at_level(logging.INFO, logger="reactive_nb"):
        with rnb.connect(sqlite_url, workers=0):
            pass
        with rnb.connect(sqlite_url, workers=0):  # the same database: said once
            pass
        with rnb.connect(other, workers=0, install=True):  # triggers: it is heard
            pass
        with rnb.connect(other, workers=0):  # triggers installed earlier: heard too
            pass
    told = [r for r in caplog.records if "will not be seen" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.INFO
    assert told[0].name == "reactive_nb"
    message = told[0].getMessage()
    assert "test.db" in message and "db.install_triggers()" in message and "redis=" in message
    assert "will not be seen" not in capsys.readouterr().out  # no kernel: the log only
