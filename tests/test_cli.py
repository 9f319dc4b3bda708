"""The ``reactive-nb`` command: the headless demo, notify + watch on a real Redis, trigger
installation, and one-line errors with exit status 2."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import teamhub

from reactive_nb.ui import demo
from reactive_nb.ui.cli import main

ROOT = Path(__file__).resolve().parent.parent


def env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "reactive_nb.ui.cli", *args]


def test_demo_headless_prints_live_updates_caused_by_the_writer(tmp_path: Path) -> None:
    done = subprocess.run(cli("demo", "--headless", "--seconds", "3",
                                                 "--interval", "0.05"), cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert (tmp_path / "demo.db").is_file()
    first = re.findall(r"^\[\d\d:\d\d:\d\d\.\d{3}\] messages\.latest\(acme\): 20 rows, \w+, "
                       r"run #1$", out, re.M)
    # Later refreshes say what changed, and how long after the commit that caused them.
    later = re.findall(r'^\[[\d:.]+\] messages\.latest\((acme|globex)\): \+1 row "[^"]+" '
                       r"\(\d+\.\d ms after commit\)$", out, re.M)
    assert first and later, out
    summary = re.search(r"^summary: 4 live queries, \d+ refreshes \((\d+) caused by the "
                        r"writer's (\d+) writes", out, re.M)
    assert summary and int(summary[1]) >= 1 and int(summary[2]) >= 1, out
    assert "Traceback" not in done.stderr


def test_demo_data_is_deterministic_and_the_writer_writes(tmp_path: Path) -> None:
    import reactive_nb as rnb

    urls = [f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"]
    counts = [demo.create_demo(url, seed=3) for url in urls]
    assert counts[0] == counts[1] and counts[0]["message"] >= 5000
    dumps = []
    for url in urls:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            dumps.append(conn.execute("SELECT * FROM message ORDER BY id").fetchall())
    assert dumps[0] == dumps[1]
    assert demo.ensure_demo(urls[0]) is False  # already there: left alone

    db = rnb.connect(urls[0])
    try:
        writer = demo.DemoWriter(db, interval=0.01, seed=1).start()
        assert writer.first_write.wait(5)
        writer.close()
        assert not any(t.name == demo.WRITER_THREAD for t in threading.enumerate())
        assert demo.count(urls[0]) == counts[0]["message"] + writer.messages
    finally:
        db.close()


def _lines(stream: Any) -> queue.Queue[str]:
    """Lines of a subprocess pipe, read by a helper thread, for waits with a timeout."""
    found: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            found.put(line.rstrip("\n"))

    threading.Thread(target=pump, name="test-pipe-reader", daemon=True).start()
    return found


def _expect(lines: queue.Queue[str], pattern: str, timeout: float = 15.0) -> str:
    seen = []
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line matching {pattern!r}; saw {seen}") from None
        seen.append(line)
        if re.search(pattern, line):
            return line


def test_notify_and_watch(redis_url: str, redis_prefix: str, redis_client: Any,
                          capsys: pytest.CaptureFixture[str]) -> None:
    watch = subprocess.Popen(
        cli("watch", "--redis", redis_url, "--prefix", redis_prefix, "--tenant", "acme",
            "--seconds", "60"),
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _lines(watch.stdout)
        _expect(lines, rf"^watching acme \(prefix {redis_prefix}\)")

        assert main(["notify", "--redis", redis_url, "--prefix", redis_prefix,
                     "--tenant", "acme", "agent", "message"]) == 0
        assert capsys.readouterr().out == "notified acme: agent v1, message v1\n"
        _expect(lines, r"^\[[\d:.]+\] acme: agent, message \(origin cli\)$")
        # The effect in Redis is the documented HINCRBY + XADD ...
        assert redis_client.hgetall(f"{redis_prefix}:{{acme}}:versions") == {
            b"agent": b"1", b"message": b"1"}
        (_, fields), = redis_client.xrange(f"{redis_prefix}:{{acme}}:changes")
        assert fields[b"tables"] == b"agent,message" and fields[b"origin"] == b"cli"
        # ... and those two commands, sent by any program, are heard the same way.
        redis_client.hincrby(f"{redis_prefix}:{{acme}}:versions", "tool", 1)
        redis_client.xadd(f"{redis_prefix}:{{acme}}:changes",
                          {"tables": "tool", "origin": "cron"}, maxlen=10000, approximate=True)
        _expect(lines, r"^\[[\d:.]+\] acme: tool \(origin cron\)$")
    finally:
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=15)
    assert watch.returncode == 0, err


def test_watch_follows_tenants_that_appear_after_it_started(
        redis_url: str, redis_prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    watch = subprocess.Popen(
        cli("watch", "--redis", redis_url, "--prefix", redis_prefix, "--seconds", "60"),
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _lines(watch.stdout)
        _expect(lines, rf"^watching default \(prefix {redis_prefix}\)")
        notify = ["notify", "--redis", redis_url, "--prefix", redis_prefix]
        assert main([*notify, "--tenant", "initech", "agent"]) == 0  # a tenant new to all
        _expect(lines, r"^\[[\d:.]+\] default: agent@tenants \(origin cli\)$")
        _expect(lines, r"^\[[\d:.]+\] watching initech too$")
        assert main([*notify, "--tenant", "initech", "message"]) == 0
        _expect(lines, r"^\[[\d:.]+\] initech: message \(origin cli\)$")
    finally:
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=15)
    assert watch.returncode == 0, err


def free_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("argv, message", [
    (["demo", "--seconds", "x"], "invalid float value: 'x'"),
    ([], "required: COMMAND"),
    (["notify", "--redis", "redis://127.0.0.1:1/0", "agent"], "cannot reach Redis"),
    (["notify", "--redis", f"redis://127.0.0.1:{free_port()}/0", "agent"],
     "cannot reach Redis: Error 111 connecting to 127.0.0.1"),
    (["notify", "--redis", "http://x", "agent"],
     "bad Redis URL 'http://x': Redis URL must specify one of the following schemes"),
    (["notify", "--redis", "redis://x:port", "agent"], "bad Redis URL 'redis://x:port'"),
    (["watch", "--redis", "http://x"], "bad Redis URL 'http://x'"),
    (["notify", "--redis", "redis://127.0.0.1:1/0", "--force", "agent"], "--force needs --url"),
    (["notify", "--redis", "redis://127.0.0.1:1/0", "--url", "not a url", "agent"],
     "bad database URL"),
    (["watch"], "required: --redis"),
    (["install-triggers", "nosuchdialect://x"], "cannot connect"),
    (["install-triggers", "sqlite:////no/such/dir/x.db"], "no SQLite database at /no/such/dir"),
])
def test_errors_are_one_line_and_exit_2(argv: list[str], message: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("reactive-nb"), lines
    assert captured.out == ""


def test_install_and_uninstall_triggers(sqlite_url: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    teamhub.create(sqlite_url)
    path = sqlite_url.removeprefix("sqlite:///")

    def triggers() -> set[str]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT tbl_name FROM sqlite_master WHERE type = 'trigger'")
            return {name for (name,) in rows}

    assert main(["install-triggers", sqlite_url, "--tables", "agent,message"]) == 0
    assert "agent" in capsys.readouterr().out
    assert triggers() == {"agent", "message"}
    assert main(["install-triggers", sqlite_url, "--tables", "agnet"]) == 2
    assert "did you mean 'agent'" in capsys.readouterr().err
    assert main(["uninstall-triggers", sqlite_url]) == 0
    assert triggers() == set()


def test_install_triggers_refuses_a_missing_sqlite_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "typo.db"
    assert main(["install-triggers", f"sqlite:///{missing}"]) == 2
    err = capsys.readouterr().err
    assert err == f"reactive-nb install-triggers: no SQLite database at {missing}\n"
    assert not missing.exists()  # connecting would have created an empty database


def test_redis_refusing_is_one_line(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["notify", "--redis", redis_url.rsplit("/", 1)[0] + "/99999", "agent"]) == 2
    assert capsys.readouterr().err == (
        "reactive-nb notify: Redis refused the connection: DB index is out of range\n")


def test_an_unforeseen_error_is_still_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from reactive_nb.ui.cli import feed

    def broken(args: Any) -> int:
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr(feed, "watch", broken)
    assert main(["watch", "--redis", "redis://127.0.0.1:1/0"]) == 2
    assert capsys.readouterr().err == "reactive-nb watch: RuntimeError: first line\n"


def _redis_keys(client: Any, prefix: str) -> list[bytes]:
    return sorted(client.scan_iter(match=f"{prefix}:*", count=1000))


@pytest.fixture
def identity_prefixes(redis_client: Any) -> Iterator[list[str]]:
    """Prefixes (``rnb:<identity>``) whose keys are deleted after the test."""
    prefixes: list[str] = []
    yield prefixes
    for prefix in prefixes:
        keys = _redis_keys(redis_client, prefix)
        if keys:
            redis_client.delete(*keys)


def test_notify_with_url_reaches_a_default_configured_reactivedb(
        sqlite_url: str, redis_url: str, redis_client: Any, identity_prefixes: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    import reactive_nb as rnb
    from reactive_nb.model.identity import database_identity

    teamhub.create(sqlite_url)
    with rnb.connect(sqlite_url, redis=redis_url, workers=0) as db:
        prefix = f"rnb:{database_identity(db.engine)}"
        identity_prefixes.append(prefix)
        agents = teamhub.define_agents(db)
        agents("acme")
        agents("acme")
        assert agents.stats.as_dict()["misses"] == 1  # cached

        # Names as the library names them: case and the default schema (main) do not matter.
        assert main(["notify", "--url", sqlite_url, "--redis", redis_url,
                     "Agent", "main.AGENT"]) == 0
        assert capsys.readouterr().out == "notified default: agent v1\n"
        agents("acme")
        assert agents.stats.as_dict()["misses"] == 2  # the notify made the entry stale
        assert redis_client.hgetall(f"{prefix}:{{default}}:versions") == {b"agent": b"1"}


@pytest.mark.parametrize("table, hint", [("nosuchtable", ""),
                                         ("agnet", " (did you mean 'agent'?)")])
def test_notify_refuses_an_unknown_table_unless_forced(
        sqlite_url: str, redis_url: str, redis_client: Any, identity_prefixes: list[str],
        capsys: pytest.CaptureFixture[str], table: str, hint: str) -> None:
    from sqlalchemy import create_engine

    from reactive_nb.model.identity import database_identity

    teamhub.create(sqlite_url)
    engine = create_engine(sqlite_url)
    prefix = f"rnb:{database_identity(engine)}"
    engine.dispose()
    identity_prefixes.append(prefix)
    assert main(["notify", "--url", sqlite_url, "--redis", redis_url, "agent", table]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"reactive-nb notify: unknown table {table!r} in this database"
                            f"{hint}; --force notifies it anyway\n") and captured.out == ""
    assert _redis_keys(redis_client, prefix) == []  # nothing was bumped, not even agent

    assert main(["notify", "--url", sqlite_url, "--redis", redis_url, "--force",
                 "agent", table.upper()]) == 0
    assert capsys.readouterr().out == f"notified default: agent v1, {table} v1\n"


def test_notify_resolves_postgresql_schemas(
        pg_url: str, redis_url: str, redis_client: Any, identity_prefixes: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy import create_engine, text

    from reactive_nb.model.identity import database_identity

    teamhub.create(pg_url)
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA analytics"))
        conn.execute(text("CREATE TABLE analytics.events (id INTEGER PRIMARY KEY)"))
    prefix = f"rnb:{database_identity(engine)}"
    engine.dispose()
    identity_prefixes.append(prefix)
    assert main(["notify", "--url", pg_url, "--redis", redis_url, "--tenant", "acme",
                 "Organization", "public.organization", '"agent"', "Analytics.Events"]) == 0
    assert capsys.readouterr().out == (
        "notified acme: organization v1, agent v1, analytics.events v1\n")
    assert redis_client.hgetall(f"{prefix}:{{acme}}:versions") == {
        b"organization": b"1", b"agent": b"1", b"analytics.events": b"1"}
    assert main(["notify", "--url", pg_url, "--redis", redis_url, "events"]) == 2
    assert "unknown table 'events' in this database (did you mean 'analytics.events'?)" in (
        capsys.readouterr().err)


def test_watch_with_url_uses_the_databases_prefix(
        sqlite_url: str, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy import create_engine

    from reactive_nb.model.identity import database_identity

    teamhub.create(sqlite_url)
    engine = create_engine(sqlite_url)
    identity = database_identity(engine)
    engine.dispose()
    assert main(["watch", "--url", sqlite_url, "--redis", redis_url, "--tenant", "acme",
                 "--seconds", "0.1"]) == 0
    assert capsys.readouterr().out.startswith(f"watching acme (prefix rnb:{identity}) for 0.1 s")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import reactive_nb

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"reactive-nb {reactive_nb.__version__}"


def test_demo_create_makes_a_database_with_triggers_and_exits(tmp_path: Path) -> None:
    done = subprocess.run(cli("demo", "--create", "teamhub.db"), cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    path = tmp_path / "teamhub.db"
    assert f"demo database: {path} (created" in done.stdout
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert set(demo.TABLES) <= names
    assert "_reactive_nb_message_insert" in names, names  # triggers: other processes are heard


def test_demo_folder_copies_the_notebooks_once(tmp_path: Path) -> None:
    from reactive_nb.ui.cli import demo_folder

    found = demo_folder(tmp_path / "work")
    assert sorted(found) == ["quickstart.ipynb", "tenant_dashboard.ipynb"]
    for name, path in found.items():
        assert path.is_absolute() and path.read_text() == (ROOT / "notebooks" / name).read_text()
    found["quickstart.ipynb"].write_text("my edits")  # a user's edits are kept
    demo_folder(tmp_path / "work")
    assert found["quickstart.ipynb"].read_text() == "my edits"


def test_demo_voila_serves_the_tenant_dashboard_from_the_working_folder(tmp_path: Path) -> None:
    """``reactive-nb demo --voila`` copies the notebooks, starts the writer and serves the
    tenant dashboard (the page itself is tested in tests/browser)."""
    import importlib.util
    import urllib.request

    if importlib.util.find_spec("voila") is None:
        if os.environ.get("REACTIVE_NB_REQUIRE_SERVICES") == "1":
            pytest.fail("voila is not installed: pip install -e '.[dashboard]'")
        pytest.skip("voila is not installed")
    port = free_port()
    home = dict(env(), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
                JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.Popen(cli("demo", "--voila", "--no-browser", "--port", str(port)),
                            cwd=tmp_path, env=home, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = _lines(proc.stdout)
        _expect(lines, r"^notebooks: " + re.escape(str(tmp_path / "reactive-nb-demo")))
        _expect(lines, r"serving tenant_dashboard\.ipynb with Voila "
                       r"\(REACTIVE_NB_URL=sqlite:////")
        assert (tmp_path / "reactive-nb-demo" / "tenant_dashboard.ipynb").is_file()
        _expect(lines, r"Voil[aà] is running at|http://localhost:" + str(port), timeout=60)
        url = f"http://localhost:{port}/voila/static/voila.js"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)  # stops Voila and the writer
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
