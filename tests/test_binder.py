"""binder/ (mybinder.org) stays consistent with pyproject.toml, and binder/start really starts
Redis and runs the command it is given."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
SELF = canonicalize_name(PROJECT["name"])
EXTRAS: dict[str, list[str]] = PROJECT.get("optional-dependencies", {})
REQUIRE = os.environ.get("REACTIVE_NB_REQUIRE_SERVICES") == "1"

# `.[a,b]` or `./[a,b]` (after `-e`): the repository itself, with extras.
LOCAL_WITH_EXTRAS = re.compile(r"^\./?\[(?P<extras>[A-Za-z0-9_.,\-]*)\]$")


def _names(extras: set[str], seen: set[str] | None = None) -> set[str]:
    """Canonical names of the distributions the project pulls in with these extras
    (its dependencies plus the extras', self-references like `reactive_nb[x]` expanded)."""
    seen = set() if seen is None else seen
    names = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    for extra in extras:
        if extra in seen:
            continue
        seen.add(extra)
        for spec in EXTRAS[extra]:
            req = Requirement(spec)
            if canonicalize_name(req.name) == SELF:
                names |= _names(set(req.extras), seen)
            else:
                names.add(canonicalize_name(req.name))
    return names


ALL_KNOWN = _names(set(EXTRAS))


def _check_requirement(spec: str) -> set[str]:
    """Check one requirement from binder/ against pyproject; return the extras of the
    repository it installs (an empty set for a third-party package)."""
    local = LOCAL_WITH_EXTRAS.match(spec.replace(" ", ""))
    if local:
        extras = {e.strip() for e in local["extras"].split(",") if e.strip()}
        unknown = extras - set(EXTRAS)
        assert not unknown, f"{spec!r}: extras {sorted(unknown)} are not in pyproject.toml"
        return extras
    assert spec not in {".", "./"}, f"{spec!r} installs the package without the dashboard extra"
    req = Requirement(spec)
    name = canonicalize_name(req.name)
    if name == SELF:
        raise AssertionError(f"{spec!r}: install the package from the repository (`.[...]`)")
    assert name in ALL_KNOWN, f"{spec!r} is not a dependency of pyproject.toml or its extras"
    return set()


def _pip_install_args(script: str) -> list[str]:
    """The requirement arguments of every `pip install` in a shell script."""
    specs: list[str] = []
    for line in script.splitlines():
        line = line.split("#", 1)[0].strip()
        if not re.search(r"\bpip3?\s+install\b", line):
            continue
        tokens = shlex.split(line)
        args = tokens[tokens.index("install") + 1 :]
        skip_next = False
        for token in args:
            if skip_next:
                skip_next = False
                continue
            if token in {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url"}:
                skip_next = True
                continue
            if token in {"&&", "||", ";"}:
                break
            if token.startswith("-"):
                continue
            specs.append(token)
    return specs


def test_requirements_txt_consistent_with_pyproject() -> None:
    path = BINDER / "requirements.txt"
    if not path.exists():
        pytest.skip("no binder/requirements.txt")
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-e ", "--editable ")):
            line = line.split(None, 1)[1]
        _check_requirement(line)


def test_post_build_installs_the_dashboard_extra() -> None:
    specs = _pip_install_args((BINDER / "postBuild").read_text(encoding="utf-8"))
    assert specs, "binder/postBuild installs nothing"
    extras: set[str] = set()
    for spec in specs:
        extras |= _check_requirement(spec)
    assert extras, "binder/postBuild does not install the repository with an extra"
    names = _names(extras)
    # Serving a dashboard needs voila; the Redis client is the shared cache's.
    assert "voila" in names, f"extras {sorted(extras)} do not include voila"
    assert "redis" in names


def test_dashboard_extra_exists_and_serves_with_voila() -> None:
    assert "dashboard" in EXTRAS
    assert "voila" in _names({"dashboard"})
    # The README's test command installs `.[test]`: it must bring what the dashboard needs.
    assert _names({"dashboard"}) <= _names({"test"})


def test_runtime_txt_satisfies_requires_python() -> None:
    path = BINDER / "runtime.txt"
    if not path.exists():
        pytest.skip("no binder/runtime.txt")
    from packaging.specifiers import SpecifierSet

    runtime = path.read_text(encoding="utf-8").strip()
    assert runtime.startswith("python-"), runtime
    version = runtime.removeprefix("python-")
    assert version in SpecifierSet(PROJECT["requires-python"]), (
        f"{runtime} does not satisfy requires-python {PROJECT['requires-python']}"
    )


def test_apt_txt_lists_redis_server() -> None:
    lines = (BINDER / "apt.txt").read_text(encoding="utf-8").splitlines()
    packages = {line.split("#", 1)[0].strip() for line in lines} - {""}
    assert "redis-server" in packages


@pytest.mark.parametrize("name", ["postBuild", "start"])
def test_scripts_are_executable_with_a_shebang(name: str) -> None:
    path = BINDER / name
    assert path.is_file(), f"binder/{name} is missing"
    assert path.stat().st_mode & 0o111, f"binder/{name} is not executable"
    assert os.access(path, os.X_OK)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("#!") and ("bash" in first or "sh" in first), first


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PING = (
    "import os, redis; "
    "r = redis.Redis.from_url(os.environ['REACTIVE_NB_REDIS']); "
    "print(os.environ['REACTIVE_NB_REDIS']); print(r.ping()); r.close()"
)


def test_start_runs_redis_and_the_command() -> None:
    missing = [tool for tool in ("redis-server", "redis-cli") if shutil.which(tool) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed"
        if REQUIRE:
            pytest.fail(f"{reason} and REACTIVE_NB_REQUIRE_SERVICES=1")
        pytest.skip(reason)

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "REACTIVE_NB_REDIS"}
    env["REDIS_PORT"] = str(port)
    command = [str(BINDER / "start"), sys.executable, "-c", PING]
    try:
        first = subprocess.run(
            command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )
        assert first.returncode == 0, first.stderr
        assert first.stdout.splitlines() == [f"redis://127.0.0.1:{port}/0", "True"], (
            first.stdout + first.stderr
        )
        assert "starting redis-server" in first.stderr

        # A second session start reuses the Redis that answers instead of starting another.
        second = subprocess.run(
            command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )
        assert second.returncode == 0, second.stderr
        assert second.stdout.splitlines()[-1] == "True"
        assert "already answers" in second.stderr

        # exec: the command's exit code is start's.
        failing = subprocess.run(
            [str(BINDER / "start"), sys.executable, "-c", "raise SystemExit(7)"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert failing.returncode == 7
    finally:
        subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "shutdown", "nosave"],
            capture_output=True,
            timeout=30,
            check=False,
        )
