"""Architecture rules import-linter does not check: no private name is read across modules.

A name with one leading underscore is its module's business. The scan parses every module
of ``reactive_nb/``, ``tests/`` and ``benchmarks/`` (and the Python scripts they hold in
strings, run in subprocesses) and reports, as ``path:line: what``:

- ``from <project module> import _name``, anywhere;
- in ``reactive_nb/``: ``obj._name`` where ``obj`` is not ``self``, ``cls`` or ``super()``
  and no code of the same module defines ``_name`` (a def, a class, an assigned name or a
  stored attribute);
- in ``tests/`` and ``benchmarks/``: any ``obj._name``; ``self._name`` only when the same
  module defines ``_name`` (a test helper's own state, not a private name it inherits);
- the same through strings: ``getattr(obj, "_name")``, ``monkeypatch.setattr(obj,
  "_name", ...)``, ``mock.patch("package.module._name")``.

Dunder names (``__init__``) are not private. Third-party protocols and APIs that happen
to start with an underscore are in :data:`ALLOWED`, each with its reason; nothing else is
excused.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = "reactive_nb"
#: Top-level packages of this repository: a private name imported from them is a hit.
PROJECT = (LIBRARY, "tests", "benchmarks")
#: Calls that read or write an attribute named by a string: (function or method name,
#: index of the argument that holds the name).
NAMED_BY_STRING = {"getattr": 1, "setattr": 1, "hasattr": 1, "delattr": 1, "object": 1}
#: Calls that name an attribute by a dotted path: ``mock.patch("pkg.mod._name")``,
#: ``monkeypatch.setattr("pkg.mod._name", value)``.
DOTTED_TARGET = {"patch", "setattr", "delattr"}


@dataclass(frozen=True)
class Allowed:
    """A third-party private-looking name we must use, and why."""

    reason: str
    only: str | None = None  # the one module allowed to use it; None: any module


#: Names of third-party protocols and APIs. Keep it minimal: anything else is fixed.
ALLOWED: dict[str, Allowed] = {
    "_repr_mimebundle_": Allowed(
        "IPython's display protocol: LiveTable extends ipywidgets' implementation and "
        "tests call it as IPython does"),
    "_replace": Allowed("the namedtuple API (urllib.parse.SplitResult._replace)"),
    "_mgr": Allowed(
        "pandas' block manager, for the memory cache's size bound: frame_nbytes and "
        "entry_cost measure a frame per block (no public API does; DataFrame.memory_usage "
        "builds a Series per column, ~0.3 ms, most of a small query's miss) and fall back "
        "to the public call when it is missing",
        only="reactive_nb/stores/cache/memory.py"),
    "_is_autocommit_isolation": Allowed(
        "SQLAlchemy 2 has no public equivalent: get_isolation_level() never reports "
        "AUTOCOMMIT (and runs SQL), get_execution_options() misses "
        "create_engine(isolation_level='AUTOCOMMIT'), which SQLAlchemy keeps in the "
        "private dialect._on_connect_isolation_level",
        only="reactive_nb/capture/sqlalchemy.py"),
}

@dataclass(frozen=True)
class Hit:
    path: str
    line: int
    name: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def is_private(name: str) -> bool:
    """One leading underscore, or a mangled ``__name``; not a dunder, not ``_``."""
    return name.startswith("_") and name.strip("_") != "" and not (
        name.startswith("__") and name.endswith("__"))


def defined_names(tree: ast.AST) -> set[str]:
    """Names a module defines: defs, classes, assigned names and stored attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def is_own(value: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()``."""
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id == "super")


def is_project_import(node: ast.ImportFrom) -> bool:
    return node.level > 0 or (node.module or "").split(".")[0] in PROJECT


def call_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def scan_tree(path: str, tree: ast.AST, strict: bool, first_line: int = 1) -> Iterator[Hit]:
    """The hits of one module, or of a script embedded at ``first_line``. ``strict``: the
    rule of tests and benchmarks (``self._name`` only for names the module defines)."""
    own = defined_names(tree)

    def may_read(value: ast.expr, name: str) -> bool:
        if strict:
            return is_own(value) and name in own
        return is_own(value) or name in own

    def hit(node: ast.AST, name: str, what: str) -> Hit:
        return Hit(path, getattr(node, "lineno", 1) + first_line - 1, name, what)

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and is_project_import(node):
            module = "." * node.level + (node.module or "")
            for alias in node.names:
                if is_private(alias.name):
                    yield hit(node, alias.name, f"from {module} import {alias.name}")
        elif isinstance(node, ast.Attribute) and is_private(node.attr):
            if not may_read(node.value, node.attr):
                yield hit(node, node.attr, f"{ast.unparse(node.value)[:40]}.{node.attr}")
        elif isinstance(node, ast.Call):
            name, args = call_name(node.func), node.args
            index = NAMED_BY_STRING.get(name or "")
            if index is not None and len(args) > index:
                attr = args[index]
                if (isinstance(attr, ast.Constant) and isinstance(attr.value, str)
                        and is_private(attr.value) and not may_read(args[0], attr.value)):
                    yield hit(node, attr.value,
                              f"{name}({ast.unparse(args[0])[:40]}, {attr.value!r})")
            if name in DOTTED_TARGET and args:
                target = args[0]
                if isinstance(target, ast.Constant) and isinstance(target.value, str):
                    for part in target.value.split(".")[1:]:
                        if is_private(part):
                            yield hit(node, part, f"{name}({target.value!r})")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            script = embedded_script(node.value)
            if script is not None:  # code another process runs: the tests' rule
                yield from scan_tree(path, script, True, node.lineno + first_line - 1)


def embedded_script(text: str) -> ast.Module | None:
    """``text`` parsed, when it is a multi-line Python script with an import (code run
    in a subprocess or a notebook cell); else None."""
    if "\n" not in text or "import" not in text:
        return None
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    if not any(isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(tree)):
        return None
    return tree


def project_files() -> list[Path]:
    return sorted([*ROOT.glob(f"{LIBRARY}/**/*.py"), *ROOT.glob("tests/**/*.py"),
                   *ROOT.glob("benchmarks/*.py")])


@functools.cache
def scan() -> tuple[Hit, ...]:
    """Every hit in the repository, the excused ones included."""
    hits: list[Hit] = []
    for file in project_files():
        path = file.relative_to(ROOT).as_posix()
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=path)
        hits.extend(scan_tree(path, tree, strict=not path.startswith(f"{LIBRARY}/")))
    return tuple(sorted(hits, key=lambda hit: (hit.path, hit.line, hit.name)))


def excused(hit: Hit) -> bool:
    """Allowlisted, where the allowlist says."""
    allowed = ALLOWED.get(hit.name)
    return allowed is not None and allowed.only in (None, hit.path)


def test_no_private_name_is_read_across_modules() -> None:
    found = [hit for hit in scan() if not excused(hit)]
    assert not found, ("private names read across modules (give them a public name, or "
                       "use public or test-support API):\n" + "\n".join(map(str, found)))


def test_exceptions_are_still_needed() -> None:
    """Every allowlisted name still excuses a hit: once it is not needed, its entry goes."""
    used = {hit.name for hit in scan() if excused(hit)}
    assert sorted(set(ALLOWED) - used) == [], "allowlisted names no longer used"


def hits_in(path: str, source: str) -> list[str]:
    tree = ast.parse(source)
    return sorted(hit.what for hit in
                  scan_tree(path, tree, strict=not path.startswith(f"{LIBRARY}/")))


@pytest.mark.parametrize(("path", "source", "expected"), [
    ("tests/test_x.py", "poller._conn.close()", ["poller._conn"]),
    ("tests/test_x.py", "from reactive_nb.stores.cache import _frame_nbytes",
     ["from reactive_nb.stores.cache import _frame_nbytes"]),
    ("tests/test_x.py", "from tests.conftest import _helper",
     ["from tests.conftest import _helper"]),
    ("tests/test_x.py", "monkeypatch.setattr(poller, '_poll', fake)",
     ["setattr(poller, '_poll')"]),
    ("tests/test_x.py", "monkeypatch.setattr('reactive_nb.db._open', fake)",
     ["setattr('reactive_nb.db._open')"]),
    ("tests/test_x.py", "getattr(w, '_on_msg')(w, {}, [])", ["getattr(w, '_on_msg')"]),
    ("tests/test_x.py", "class T(LiveTable):\n    def f(self):\n        self._push({})\n",
     ["self._push"]),  # inherited from the library: private there
    ("tests/test_x.py", "class T:\n    def __init__(self):\n        self._n = 0\n"
     "    def f(self):\n        return self._n + obj.__len__()\n", []),
    ("benchmarks/bench_x.py", "SCRIPT = '''\nimport sys\nprint(cache._entries)\n'''",
     ["cache._entries"]),
    ("reactive_nb/a.py", "from .b import _helper", ["from .b import _helper"]),
    ("reactive_nb/a.py", "def f(other):\n    return other._lock, self._x, super()._y",
     ["other._lock"]),
    ("reactive_nb/a.py", "class A:\n    def __init__(self):\n        self._lock = 1\n"
     "    def same(self, other):\n        return other._lock", []),
    ("reactive_nb/a.py", "def f(conn):\n    return getattr(conn, '_secret', None)",
     ["getattr(conn, '_secret')"]),
])
def test_the_scan_finds_what_it_should(path: str, source: str, expected: list[str]) -> None:
    """The rules on small sources."""
    assert hits_in(path, source) == expected


def test_the_allowlist_excuses_its_names_only_where_it_says() -> None:
    def excuses(path: str, source: str) -> list[bool]:
        tree = ast.parse(source)
        return [excused(hit) for hit in scan_tree(path, tree, strict=True)]

    assert excuses("tests/test_x.py", "parts._replace(query='')") == [True]
    assert excuses("reactive_nb/stores/cache/memory.py", "df._mgr.blocks") == [True]
    assert excuses("reactive_nb/stores/cache/redis.py", "df._mgr.blocks") == [False]
    assert excuses("tests/test_x.py", "poller._poll()") == [False]
