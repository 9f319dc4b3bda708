"""The benchmark suite still runs: ``python -m benchmarks --quick --only core`` exits 0
and prints its tables. Timings are not asserted here (benchmarks print goals, tests do
not bound time); this only catches a benchmark broken by an API change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_core_benchmark_prints_its_tables(pg_url: str, redis_url: str) -> None:
    # The fixtures only make the test skip (or fail, in CI) when a server is missing; the
    # benchmark creates and drops its own database and Redis keys.
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "core"],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "Command: `python -m benchmarks --quick --only core`" in out
    assert "| backend | rows | pandas.read_sql_query (baseline) | reactive miss |" in out
    for title in ("Core 1", "Core 2", "Core 3", "Core 4", "Core 5"):
        assert f"### {title} ·" in out, f"{title} missing:\n{out[-3000:]}"
    for backend in ("SQLite", "PostgreSQL"):
        assert f"| {backend} | 100,000 |" in out
    assert "crashed" not in out
