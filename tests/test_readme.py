"""Every README recipe runs as written.

Each fenced ``python`` or ``bash`` block of README.md runs, except a block right after an
HTML comment ``<!-- not run: why -->``. The blocks of one section (``## ...``) run in
order in one fresh folder holding a copy of ``notebooks/`` (as a clone has), so a section
may create what its next block uses. Python blocks run with ``python -``; bash lines run in
bash, except three kinds checked differently:

- ``pip install -e '.[extras]'``: not run (the suite runs installed); the extras must
  exist in pyproject.toml;
- ``reactive-nb demo`` (opens JupyterLab): run as ``reactive-nb demo --headless --seconds 2``;
- a server (``reactive-nb demo --voila``, ``voila NOTEBOOK``): started with
  ``--no-browser --port P``, it must serve Voila's front end, then it is stopped; the
  notebook of a ``voila`` line is also executed with nbclient in that line's environment
  (``REACTIVE_NB_URL``), and must run without an error.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.serving import wait_until_answering

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
REQUIRE = os.environ.get("REACTIVE_NB_REQUIRE_SERVICES") == "1"


class Block(NamedTuple):
    section: str
    line: int
    language: str
    code: str
    skipped: str | None  # the reason of a "<!-- not run: ... -->", else None


def readme_blocks(text: str) -> list[Block]:
    """The fenced python/bash blocks of ``text``, with their section and skip marker."""
    blocks = []
    section = "top"
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence:
            end = lines.index("```", i + 1)
            language = fence[1]
            if language in ("python", "bash"):
                previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
                marker = re.match(r"^<!--\s*not run:\s*(.*?)\s*-->$", previous.strip())
                blocks.append(Block(section, i + 1, language, "\n".join(lines[i + 1:end]),
                                    marker[1] if marker else None))
            i = end
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text())
SECTIONS = list(dict.fromkeys(b.section for b in BLOCKS if b.skipped is None))


def env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    scripts = str(Path(sys.executable).parent)  # reactive-nb, voila of this interpreter
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1",
                PATH=os.pathsep.join([scripts, os.environ.get("PATH", "")]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_readme_has_runnable_recipes() -> None:
    """The sections a new user follows are all covered (and the parser finds them)."""
    assert {"top", "In twenty lines", "Dashboards (Voila)"} <= set(SECTIONS), SECTIONS
    assert any("pytest" in b.code for b in BLOCKS if b.skipped)  # the one skipped block


@pytest.mark.slow
@pytest.mark.parametrize("section", SECTIONS)
def test_readme_section_runs(section: str, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    for block in BLOCKS:
        if block.section != section or block.skipped is not None:
            continue
        where = f"README.md line {block.line}"
        if block.language == "python":
            done = subprocess.run([sys.executable, "-"], input=block.code, cwd=tmp_path,
                                  env=env(), capture_output=True, text=True, timeout=120,
                                  check=False)
            assert done.returncode == 0, f"{where}:\n{done.stdout}\n{done.stderr}"
            continue
        for command in _commands(block.code):
            _run_bash(command, tmp_path, where)


def _commands(code: str) -> list[str]:
    """The bash block's commands, comments stripped (one command a line)."""
    found = []
    for line in code.splitlines():
        command = re.sub(r"\s+#.*$", "", line).strip()
        if command and not command.startswith("#"):
            found.append(command)
    return found


def _run_bash(command: str, folder: Path, where: str) -> None:
    words = shlex.split(command)
    assignments = [w for w in words if re.match(r"^[A-Z_]+=", w)]
    program = words[len(assignments):]
    if program[:3] == ["pip", "install", "-e"]:
        _check_extras(program[3], where)
    elif program[:2] == ["reactive-nb", "demo"] and "--voila" in program:
        _check_server(command, folder, where, notebook=None)
    elif program[:2] == ["reactive-nb", "demo"] and not {"--headless", "--create"} & set(program):
        _bash(f"{command} --headless --seconds 2", folder, where)
    elif program[:1] == ["voila"]:
        _check_server(command, folder, where, notebook=program[1])
    else:
        _bash(command, folder, where)


def _bash(command: str, folder: Path, where: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["bash", "-c", command], cwd=folder, env=env(), capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{where}: {command}\n{done.stdout}\n{done.stderr}"
    return done


def _check_extras(spec: str, where: str) -> None:
    extras = re.fullmatch(r"\.\[([\w,-]+)\]", spec)
    assert extras, f"{where}: install this checkout with its extras, not {spec!r}"
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for extra in extras[1].split(","):
        assert extra in declared, f"{where}: no extra [{extra}] in pyproject.toml"


def _check_server(command: str, folder: Path, where: str, notebook: str | None) -> None:
    """Start the server the line starts; it must serve Voila's front end."""
    if shutil.which("voila", path=env()["PATH"]) is None:
        if REQUIRE:
            pytest.fail("voila is not installed: pip install -e '.[dashboard]'")
        pytest.skip("voila is not installed")
    port = free_port()
    runtime = {name: str(folder / f".{name.lower()}") for name in (
        "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR")}
    proc = subprocess.Popen(["bash", "-c", f"{command} --no-browser --port={port}"],
                            cwd=folder, env={**env(), **runtime}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/voila/static/voila.js", proc,
                             f"{where}: the server", lambda: proc.communicate()[0])
    finally:
        with contextlib.suppress(ProcessLookupError):  # the server and its writer
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
    assert "Traceback" not in output, f"{where}: {command}\n{output}"
    if notebook is not None:
        _execute(command, folder / notebook, folder, where)


def _execute(command: str, notebook: Path, folder: Path, where: str) -> None:
    """Run the notebook headless (nbclient) in the line's environment, from its own folder
    as Voila does: a relative database path would miss the database there."""
    import nbformat
    from nbclient import NotebookClient

    shown = _bash(f"{command.split(' voila ')[0]} bash -c 'printf %s \"$REACTIVE_NB_URL\"'",
                  folder, where).stdout
    assert shown.startswith("sqlite:////"), f"{where}: the database URL must be absolute"
    nb = nbformat.read(notebook, as_version=4)
    previous = os.environ.get("REACTIVE_NB_URL")
    os.environ["REACTIVE_NB_URL"] = shown
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(notebook.parent)}}).execute()
    finally:
        if previous is None:
            del os.environ["REACTIVE_NB_URL"]
        else:
            os.environ["REACTIVE_NB_URL"] = previous
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, f"{where}: {notebook.name} failed: {errors}"
