"""``cache_bytes`` bounds the memory the in-process cache really holds, whatever the frames'
shape: one-row frames, empty frames, wide frames, big frames, jsonb-like objects.

Measured with tracemalloc (what Python and numpy allocate and still hold), not RSS, which
is noisy; ``benchmarks/bench_faults.py`` reports RSS against the bound."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pytest

from reactive_nb._frames import pandas as configured_pandas
from reactive_nb.stores.cache import MemoryCache, entry_cost

BOUND = 8 * 2**20
SLACK = 1.5  # retained memory may exceed the bound by this factor, no more
VERSIONS = {"agent": 3, "@epoch": 123_456_789_012, "~agent": 1, "@definition": 987_654_321}

Make = Callable[[int], pd.DataFrame]


def one_row(i: int) -> pd.DataFrame:
    return pd.DataFrame.from_records([(i, f"name {i}", i * 1.5)], columns=["id", "name", "x"])


def empty(i: int) -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series([], dtype="int64"), "x": pd.Series([], dtype=float)})


def no_columns(i: int) -> pd.DataFrame:
    return pd.DataFrame()


def wide_one_row(i: int) -> pd.DataFrame:
    return pd.DataFrame({f"c{j}": [i if j % 2 else float(i)] for j in range(30)})


def documents(i: int) -> pd.DataFrame:
    """jsonb-like: every value a dict holding a list and strings."""
    docs = [{"id": i, "tags": [f"t{k}" for k in range(8)], "owner": {"name": f"n{i}-{k}"}}
            for k in range(50)]
    return pd.DataFrame({"doc": pd.Series(docs, dtype=object)})


def big(i: int) -> pd.DataFrame:
    n = 100_000
    return pd.DataFrame({"id": np.arange(n) + i, "x": np.random.default_rng(i).random(n),
                         "name": pd.Series([f"row {k}" for k in range(n)], dtype=object)})


@pytest.fixture(autouse=True)
def tracing() -> Iterator[None]:
    configured_pandas()  # copy-on-write, as the library runs
    gc.collect()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def retained_by_filling(make: Make, entries: int, bound: int = BOUND) -> tuple[int, MemoryCache]:
    """Bytes still allocated after putting ``entries`` frames in a cache bounded by
    ``bound``, the frames being built here and dropped, as a handler's results are."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    cache = MemoryCache(max_bytes=bound)
    for i in range(entries):
        cache.set("acme", f'agents.byOrg:{{"organization_id":"org{i:06d}"}}', make(i),
                  VERSIONS, None)
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before, cache


@pytest.mark.parametrize(("make", "entries"), [
    (one_row, 4_000), (empty, 5_000), (no_columns, 8_000), (wide_one_row, 2_500),
    (documents, 300), (big, 6)])
def test_retained_memory_stays_within_the_bound(make: Make, entries: int) -> None:
    """The fault: 100k one-row frames counted 15 MB but took 671 MiB; a 1 MiB bound held
    44 MiB of empty frames. Each shape is filled well past the bound."""
    retained, cache = retained_by_filling(make, entries)
    assert len(cache) < entries  # the bound was reached: entries were evicted
    assert cache.nbytes <= BOUND
    assert retained <= SLACK * BOUND, (
        f"{make.__name__}: {retained / 2**20:.1f} MiB retained for a "
        f"{BOUND / 2**20:.0f} MiB bound ({len(cache)} entries)")


def test_mixed_shapes_share_one_bound() -> None:
    shapes: list[Make] = [one_row, empty, no_columns, wide_one_row, documents]
    retained, cache = retained_by_filling(lambda i: shapes[i % len(shapes)](i), 6_000)
    assert len(cache) < 6_000
    assert retained <= SLACK * BOUND


def test_the_lru_counts_each_entry_at_its_cost() -> None:
    """Eviction order is unchanged: least recently used first, by what entries cost."""
    frame = pd.DataFrame({"x": np.arange(100), "y": np.arange(100, dtype=float)})
    one = entry_cost("a", frame, {})
    assert one > int(frame.memory_usage(deep=True, index=True).sum())  # overhead counted
    cache = MemoryCache(max_bytes=3 * one)
    for key in "abc":
        assert cache.set("acme", key, frame, {}, ttl=None)
    assert cache.nbytes == 3 * one
    assert cache.get("acme", "a") is not None  # a is now the most recent
    cache.set("acme", "d", frame, {}, ttl=None)
    assert cache.get("acme", "b") is None
    assert all(cache.get("acme", k) is not None for k in "acd")
    assert cache.nbytes == 3 * one


def test_an_entry_larger_than_the_bound_is_not_kept() -> None:
    cache = MemoryCache(max_bytes=2_000)  # less than what keeping any frame costs
    assert not cache.set("acme", "k", pd.DataFrame(), {}, ttl=None)
    assert len(cache) == 0 and cache.nbytes == 0
