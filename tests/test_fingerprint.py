"""definition_fingerprint: re-running a notebook cell that changes what a handler runs
changes the number; anything else leaves it alone. Cells are simulated by exec() of source
into a namespace dict named ``__main__``, as IPython does."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from reactive_nb.model.fingerprint import MAX_NODES, definition_fingerprint

ROOT = pathlib.Path(__file__).parent.parent


class Notebook:
    """A namespace that runs cells like a kernel: each cell compiled under its own name."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"__name__": "__main__"}
        self.count = 0

    def run(self, source: str) -> None:
        self.count += 1
        exec(compile(textwrap.dedent(source), f"<cell-{self.count}>", "exec"), self.ns)

    def fingerprint(self, name: str = "handler") -> int:
        fp = definition_fingerprint(self.ns[name])
        assert fp == definition_fingerprint(self.ns[name]), "not deterministic"
        return fp


HANDLER = """
def handler(org: str, limit: int = 50):
    rows = run(SQL, org)
    return shape(rows)[:limit]
"""
SETUP = """
SQL = "SELECT * FROM agent WHERE organization_id = :org"
UNRELATED = 1
def run(sql, org):
    return [sql, org]
def shape(rows):
    return rows
"""


def notebook(setup: str = SETUP, handler: str = HANDLER) -> Notebook:
    nb = Notebook()
    nb.run(setup)
    nb.run(handler)
    return nb


def refingerprint(nb: Notebook, cell: str, handler: str = HANDLER) -> int:
    """Run ``cell`` then re-run the handler's cell, as a user re-running cells would."""
    nb.run(cell)
    nb.run(handler)
    return nb.fingerprint()


# -- what changes the fingerprint ----------------------------------------------------------------


def test_redefining_a_global_sql_string_changes_it() -> None:
    nb = notebook()
    before = nb.fingerprint()
    assert refingerprint(nb, 'SQL = "SELECT * FROM agent WHERE org = :org"') != before


def test_setting_the_same_sql_again_does_not_change_it() -> None:
    nb = notebook()
    before = nb.fingerprint()
    assert refingerprint(nb, 'SQL = "SELECT * FROM agent WHERE organization_id = :org"') == before


def test_editing_a_helper_function_body_changes_it() -> None:
    nb = notebook()
    before = nb.fingerprint()
    assert refingerprint(nb, "def run(sql, org):\n    return [sql.lower(), org]\n") != before


def test_editing_a_helper_of_a_helper_changes_it() -> None:
    nb = notebook(SETUP + "def inner(x):\n    return x\ndef shape(rows):\n    return inner(rows)\n")
    before = nb.fingerprint()
    assert refingerprint(nb, "def inner(x):\n    return x[::-1]\n") != before


@pytest.mark.parametrize(("first", "second"), [
    ("TABLES = ['agent', 'org']", "TABLES = ['agent', 'message']"),
    ("TABLES = ('agent', 'org')", "TABLES = ['agent', 'org']"),
    ("TABLES = {'a': 'agent', 'o': 'org'}", "TABLES = {'a': 'agent', 'o': 'organization'}"),
    ("TABLES = {'agent', 'org'}", "TABLES = {'agent', 'orgs'}"),
    ("TABLES = [1, [2, [3]]]", "TABLES = [1, [2, [4]]]"),
    ("TABLES = 50", "TABLES = 50.0"),
    ("TABLES = None", "TABLES = float('nan')"),
    ("TABLES = b'agent'", "TABLES = 'agent'"),
    ("import datetime\nTABLES = datetime.date(2024, 1, 1)",
     "import datetime\nTABLES = datetime.date(2024, 1, 2)"),
    ("TABLES = [run]", "TABLES = [shape]"),
])
def test_changing_a_global_value_changes_it(first: str, second: str) -> None:
    handler = "def handler(org):\n    return run(SQL, TABLES)\n"
    nb = notebook(SETUP + first + "\n", handler)
    before = nb.fingerprint()
    assert refingerprint(nb, second, handler) != before


def test_a_global_list_of_helpers_follows_their_bodies() -> None:
    handler = "def handler(org):\n    return [step(org) for step in STEPS]\n"
    nb = notebook(SETUP + "def a(x):\n    return x\nSTEPS = [a, len]\n", handler)
    before = nb.fingerprint()
    assert refingerprint(nb, "def a(x):\n    return x * 2\nSTEPS = [a, len]\n", handler) != before


def test_a_global_defined_after_the_handler_changes_it() -> None:
    nb = notebook(setup="def run(sql, org):\n    return sql\ndef shape(r):\n    return r\n")
    before = nb.fingerprint()
    assert refingerprint(nb, "SQL = 'SELECT 1'") != before


def test_defaults_change_it() -> None:
    nb = notebook()
    before = nb.fingerprint()
    other = HANDLER.replace("limit: int = 50", "limit: int = 10")
    nb.run(other)
    assert nb.fingerprint() != before


def test_closure_cells_count_like_globals() -> None:
    nb = Notebook()
    nb.run("""
    def make(sql):
        def handler(org):
            return helper(sql, org)
        return handler
    def helper(sql, org):
        return sql
    a = make("SELECT 1")
    b = make("SELECT 2")
    c = make("SELECT 1")
    """)
    assert nb.fingerprint("a") != nb.fingerprint("b")
    assert nb.fingerprint("a") == nb.fingerprint("c")
    before = nb.fingerprint("a")
    nb.run("def helper(sql, org):\n    return org\na = make('SELECT 1')\n")
    assert nb.fingerprint("a") != before


def test_a_user_module_attribute_is_followed(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nb_helpers.py"
    path.write_text("QUERY = 'SELECT 1'\n")
    spec = importlib.util.spec_from_file_location("nb_helpers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    nb = Notebook()
    nb.ns["helpers"] = module
    nb.run("def handler(org):\n    return helpers.QUERY\n")
    before = nb.fingerprint()
    setattr(module, "QUERY", "SELECT 2")  # noqa: B010 - a module object mypy cannot see into
    assert nb.fingerprint() != before


def test_a_wrapped_helper_is_followed() -> None:
    """lru_cache (like ReactiveFunction) keeps the user function in ``__wrapped__``."""
    setup = "import functools\n@functools.lru_cache\ndef lookup(x):\n    return x\n"
    handler = "def handler(org):\n    return lookup(org)\n"
    nb = notebook(setup, handler)
    before = nb.fingerprint()
    assert refingerprint(nb, setup.replace("return x", "return -x"), handler) != before


def test_a_user_callable_instance_follows_its_call_method() -> None:
    setup = "class Runner:\n    def __call__(self, x):\n        return x\nrun = Runner()\n"
    handler = "def handler(org):\n    return run(org)\n"
    nb = notebook(setup, handler)
    before = nb.fingerprint()
    assert refingerprint(nb, setup.replace("return x", "return [x]"), handler) != before


@pytest.mark.parametrize(("first", "second"), [
    ("import json\nfn = json.dumps", "import json\nfn = json.loads"),
    ("import math\nfn = math.sqrt", "import math\nfn = math.floor"),
    ("import numpy\nfn = numpy.add", "import numpy\nfn = numpy.multiply"),
    ("import json as fn", "import os as fn"),
    ("fn = dict", "fn = list"),
    ("fn = str.upper", "fn = str.lower"),
])
def test_library_callables_count_by_name(first: str, second: str) -> None:
    handler = "def handler(org):\n    return fn(org)\n"
    nb = notebook(first + "\n", handler)
    before = nb.fingerprint()
    assert refingerprint(nb, second, handler) != before


# -- what does not change it ---------------------------------------------------------------------


def test_an_unrelated_global_does_not_change_it() -> None:
    nb = notebook()
    before = nb.fingerprint()
    assert refingerprint(nb, "UNRELATED = 2\nOTHER_SQL = 'DELETE FROM agent'") == before


def test_an_attribute_named_like_a_global_is_not_that_global() -> None:
    handler = "def handler(org):\n    return org.SQL\n"
    nb = notebook(handler=handler)
    before = nb.fingerprint()
    assert refingerprint(nb, "SQL = 'something else'", handler) == before


def test_the_same_source_in_two_namespaces_gives_the_same_number() -> None:
    first, second = notebook(), notebook()
    second.run("# a cell that shifts line numbers\n\n\n")
    second.run("\n\n" + HANDLER)
    assert first.fingerprint() == second.fingerprint()


def test_running_the_handler_does_not_change_it() -> None:
    """CPython specialises hot bytecode in place; co_code must still read the same."""
    nb = notebook()
    before = nb.fingerprint()
    for _ in range(2000):
        nb.ns["handler"]("acme")
    assert nb.fingerprint() == before


def test_the_number_is_the_same_in_another_process() -> None:
    """No hash() of a str anywhere: sets of strings walk in a different order per process."""
    setup = SETUP + (
        "TABLES = {'agent', 'org', 'message', 'team'}\n"
        "MAP = {'b': run, 'a': shape}\n"
        "HOOKS = {run, shape, 'agent', 'org', 'message', ('team', 1)}\n")
    handler = "def handler(org):\n    return run(SQL, TABLES), MAP, HOOKS\n"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from test_fingerprint import notebook
        print(notebook({setup!r}, {handler!r}).fingerprint())
    """)
    numbers = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             check=True, env=env, cwd=ROOT)
        numbers.add(int(out.stdout))
    assert numbers == {notebook(setup, handler).fingerprint()}


# -- shapes of handlers and globals ----------------------------------------------------------


def test_a_recursive_helper_terminates_and_still_counts() -> None:
    setup = SETUP + """
def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)
def even(n):
    return n == 0 or odd(n - 1)
def odd(n):
    return n != 0 and even(n - 1)
"""
    handler = "def handler(org):\n    return fact(3), even(4)\n"
    nb = notebook(setup, handler)
    before = nb.fingerprint()
    changed = "def odd(n):\n    return n != 0 and not even(n - 1)\n"
    assert refingerprint(nb, changed, handler) != before


def test_a_self_containing_global_terminates() -> None:
    handler = "def handler(org):\n    return LOOP, TREE\n"
    nb = notebook(SETUP + "LOOP = []\nLOOP.append(LOOP)\nTREE = {}\nTREE['self'] = [TREE, run]\n",
                  handler)
    assert isinstance(nb.fingerprint(), int)


def test_a_lambda_works_and_reads_globals() -> None:
    nb = notebook(handler="handler = lambda org: run(SQL, org)\n")
    before = nb.fingerprint()
    assert refingerprint(nb, "SQL = 'SELECT 2'", "handler = lambda org: run(SQL, org)\n") != before


def test_a_partial_counts_its_function_and_arguments() -> None:
    nb = notebook(handler="def query(sql, org):\n    return run(sql, org)\n")
    query: Callable[..., Any] = nb.ns["query"]
    one = definition_fingerprint(functools.partial(query, "SELECT 1"))
    assert one == definition_fingerprint(functools.partial(query, "SELECT 1"))
    assert one != definition_fingerprint(functools.partial(query, "SELECT 2"))
    assert one != definition_fingerprint(functools.partial(query, sql="SELECT 1"))
    nb.run("def run(sql, org):\n    return org\n")
    assert one != definition_fingerprint(functools.partial(query, "SELECT 1"))


def test_builtins_and_callable_instances_work() -> None:
    assert definition_fingerprint(len) != definition_fingerprint(sorted)
    assert definition_fingerprint(np.add) != definition_fingerprint(np.multiply)
    assert definition_fingerprint(str.upper) != definition_fingerprint(str.lower)


def test_a_method_counts_its_function() -> None:
    nb = Notebook()
    nb.run("class Q:\n    def rows(self, org):\n        return SQL\nSQL = 'a'\nq = Q()\n")
    before = definition_fingerprint(nb.ns["q"].rows)
    assert before == definition_fingerprint(nb.ns["Q"]().rows)
    nb.run("SQL = 'b'")
    assert definition_fingerprint(nb.ns["q"].rows) != before


def test_a_dataframe_global_counts_by_shape_and_dtypes_not_identity() -> None:
    handler = "def handler(org):\n    return FRAME\n"
    nb = notebook(SETUP + "FRAME = None\n", handler)
    fingerprints = []
    for frame in (pd.DataFrame({"a": [1, 2]}), pd.DataFrame({"a": [3, 4]}),
                  pd.DataFrame({"a": [1, 2, 3]}), pd.DataFrame({"a": [1.0, 2.0]}),
                  pd.DataFrame({"b": [1, 2]})):
        nb.ns["FRAME"] = frame
        fingerprints.append(nb.fingerprint())
    same_shape_other_values, *others = fingerprints[1:]
    assert same_shape_other_values == fingerprints[0]
    assert len({fingerprints[0], *others}) == 4


def test_a_small_array_counts_by_value_a_big_one_by_shape() -> None:
    handler = "def handler(org):\n    return ARRAY\n"
    nb = notebook(SETUP + "ARRAY = None\n", handler)
    nb.ns["ARRAY"] = np.array([1, 2, 3])
    small = nb.fingerprint()
    nb.ns["ARRAY"] = np.array([1, 2, 4])
    assert nb.fingerprint() != small
    nb.ns["ARRAY"] = np.zeros(1 << 20)
    big = nb.fingerprint()
    nb.ns["ARRAY"] = np.ones(1 << 20)
    assert nb.fingerprint() == big


def test_a_huge_list_counts_by_length() -> None:
    handler = "def handler(org):\n    return BIG\n"
    nb = notebook(SETUP + f"BIG = list(range({MAX_NODES * 10}))\n", handler)
    before = nb.fingerprint()
    nb.ns["BIG"][5] = -1
    assert nb.fingerprint() == before
    nb.ns["BIG"].append(0)
    assert nb.fingerprint() != before


def test_an_unknown_object_counts_by_type_not_identity() -> None:
    handler = "def handler(org):\n    return CONN\n"
    nb = notebook(SETUP + "class Conn:\n    pass\nCONN = Conn()\n", handler)
    before = nb.fingerprint()
    nb.ns["CONN"] = nb.ns["Conn"]()
    assert nb.fingerprint() == before
    nb.ns["CONN"] = object()
    assert nb.fingerprint() != before


def test_the_number_is_a_63_bit_int() -> None:
    numbers = [notebook().fingerprint(), definition_fingerprint(json.dumps),
               definition_fingerprint(len), definition_fingerprint(lambda: None)]
    assert all(type(n) is int and 0 <= n < 1 << 63 for n in numbers)
    assert len(set(numbers)) == len(numbers)
