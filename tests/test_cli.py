"""The ``reactive-nb`` command: the headless demo, notify + watch on a real Redis, trigger
installation, and one-line errors with exit status 2."""

from __future__ import annotations

import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
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
    done = subprocess.run(cli("demo", "--headless", "--seconds", "3"), cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert (tmp_path / "demo.db").is_file()
    first = re.findall(r"^\[\d\d:\d\d:\d\d\.\d{3}\] messages\.latest\(acme\): 20 rows, \w+, "
                       r"run #1$", out, re.M)
    later = re.findall(r"^\[[\d:.]+\] [\w.]+\([\w]*\): \d+ rows, \w+, run #([2-9]|\d\d+)$",
                       out, re.M)
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


@pytest.mark.parametrize("argv, message", [
    (["demo", "--seconds", "x"], "invalid float value: 'x'"),
    ([], "required: COMMAND"),
    (["notify", "--redis", "redis://127.0.0.1:1/0", "agent"], "cannot reach Redis"),
    (["watch"], "required: --redis"),
    (["install-triggers", "nosuchdialect://x"], "cannot connect"),
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
