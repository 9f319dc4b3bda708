"""Issue 9 benchmark: the model-based differential test under its long ``soak`` profile.

``tests/test_model_based.py`` drives random writes through every path (in-process,
external transactions, views, cascades, volatile functions, DDL...), random tenants and
Redis / listener faults, and after every settle compares every cached call and live frame
with the same query run fresh. In CI it runs a short ``ci`` profile; here it runs the
``soak`` profile (``--hypothesis-profile soak``, 500 examples of up to 40 steps per
variant; ``--quick``: the ``ci`` profile) and reports how many examples passed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .common import Settings, Table

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("test_sqlite_memory_stores", "test_postgres_memory_stores",
            "test_postgres_redis_triggers")


def run(settings: Settings) -> Iterator[Table]:
    profile = "ci" if settings.quick else "soak"
    table = Table(f"Model 1 · model-based differential test, profile `{profile}` "
                  "(goal: every example passes)",
                  ["variant", "examples run", "time", "result"])
    for variant in VARIANTS:
        with tempfile.NamedTemporaryFile("r", suffix=".count") as counted:
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 f"--hypothesis-profile={profile}", f"tests/test_model_based.py::{variant}"],
                cwd=ROOT, capture_output=True, text=True, check=False,
                env={**os.environ, "REACTIVE_NB_MODEL_COUNT": counted.name})
            elapsed = time.perf_counter() - start
            examples = len(counted.read().splitlines())  # one line per machine built
        result = "PASS" if done.returncode == 0 else "FAIL"
        table.add(variant.removeprefix("test_"), f"{examples:,}", f"{elapsed:.0f} s", result)
        if result == "FAIL":
            tail = " ".join(done.stdout.strip().splitlines()[-3:])[:300]
            table.note(f"{variant}: {tail}")
    table.note("Each example: a fresh database, random rules (writes through every path, "
               "reads, live queries, faults), and after every settle every cached call and "
               "live frame compared with the same query run fresh on a plain connection.")
    yield table
