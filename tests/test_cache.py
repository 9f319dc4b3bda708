"""The result cache: the same suite on the memory LRU and on Redis (Arrow IPC)."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pytest

from reactive_nb.stores.cache import Cache, CacheEntry, MemoryCache, RedisCache, entry_cost
from tests.cluster import cluster_prefix, redis_cluster  # noqa: F401 - fixtures

BACKENDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    # A client that decodes replies to str: the binary payload must still come back.
    pytest.param("redis-str", marks=pytest.mark.redis),
    # A local Redis Cluster (tests/cluster.py): every key of a tenant in one slot.
    pytest.param("cluster", marks=pytest.mark.redis),
]


class Clock:
    """A settable time.time()."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class MakeCache(Protocol):
    def __call__(self, max_bytes: int = ..., clock: Callable[[], float] | None = ...) -> Cache:
        ...


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_cache(backend: str, request: pytest.FixtureRequest) -> Iterator[MakeCache]:
    """A factory of caches of the chosen backend; Redis ones share one prefix, each on
    its own client, as separate processes would."""
    opened: list[Any] = []

    def make(max_bytes: int = 512 * 2**20, clock: Callable[[], float] | None = None) -> Cache:
        cache: Cache
        clock = clock or Clock()
        if backend == "memory":
            cache = MemoryCache(max_bytes=max_bytes, clock=clock)
            opened.append((cache, None))
            return cache
        import redis

        if backend == "cluster":
            prefix = request.getfixturevalue("cluster_prefix")
            client = request.getfixturevalue("redis_cluster").client()
        else:
            url = request.getfixturevalue("redis_url")
            prefix = request.getfixturevalue("redis_prefix")
            client = redis.Redis.from_url(url, decode_responses=backend == "redis-str")
        cache = RedisCache(client, prefix=prefix, max_bytes=max_bytes, clock=clock)
        opened.append((cache, client))
        return cache

    yield make
    for cache, client in opened:
        cache.close()
        if client is not None:
            client.close()


@pytest.fixture
def cache(make_cache: MakeCache) -> Cache:
    return make_cache()


def every_dtype(n: int = 6) -> pd.DataFrame:
    """A frame with each kind of column a SQL result can bring back."""
    dec = decimal.Decimal
    index = pd.Index([10, 20, 30, 40, 50, 60], name="id")
    return pd.DataFrame(
        {
            "ts": pd.date_range("2024-03-30 22:00", periods=n, freq="h", tz="Europe/Paris"),
            "ts_naive": pd.date_range("2024-01-01", periods=n, freq="D"),
            "day": [dt.date(2024, 1, i + 1) if i != 2 else None for i in range(n)],
            "amount": [dec("1.10"), dec("2.5"), None, dec("-3"), dec("0.001"), dec("1e3")],
            "i": np.arange(n, dtype="int64"),
            "i32": np.arange(n, dtype="int32"),
            "ni": pd.array([1, None, 3, 4, 5, None], dtype="Int64"),
            "f": [1.5, np.nan, 2.0, -0.0, None, np.inf],
            "b": [True, False, True, True, False, False],
            "nb": pd.array([True, None, False, True, None, False], dtype="boolean"),
            "s": ["a", None, "c", "dé", "", "f"],
            # object strings (pandas 2 default); pandas 3 would infer "str" from a list
            "o": pd.Series(["x", None, "z", "w", "v", "u"], dtype=object, index=index),
            "cat": pd.Categorical(["lo", "hi", "lo", None, "hi", "lo"],
                                  categories=["lo", "hi"], ordered=True),
            "bytes": [b"\x00\xff", b"", None, b"a", b"b", b"c"],
        },
        index=index,
    )


def numbers(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(start, start + n, dtype="int64"),
                         "y": np.arange(n, dtype="float64")})


def test_implements_protocol(cache: Cache) -> None:
    assert isinstance(cache, Cache)


def test_missing_key_is_a_miss(cache: Cache) -> None:
    assert cache.get("acme", "nope") is None


def test_round_trip_keeps_every_dtype(make_cache: MakeCache) -> None:
    clock = Clock()
    cache = make_cache(clock=clock)
    df = every_dtype()
    assert cache.set("acme", 'agents.getAll:{"limit":50}', df, {"agent": 3, "*": 1}, ttl=None)
    entry = cache.get("acme", 'agents.getAll:{"limit":50}')
    assert isinstance(entry, CacheEntry)
    pd.testing.assert_frame_equal(entry.df, df)
    assert entry.df.dtypes.astype(str).tolist() == df.dtypes.astype(str).tolist()
    assert entry.df["o"].tolist() == ["x", None, "z", "w", "v", "u"]
    assert dict(entry.versions) == {"agent": 3, "*": 1}
    assert entry.created_at == clock.now
    assert entry.expires_at is None
    assert entry.nbytes > 0
    with pytest.raises(TypeError):
        entry.versions["agent"] = 4  # type: ignore[index]


@pytest.mark.parametrize(
    "df",
    [
        pd.DataFrame({"a": pd.Series([], dtype="int64")}),
        pd.DataFrame({"a": [1, 2]}, index=pd.Index(["x", None], dtype=object, name="k")),
        pd.DataFrame({"a": [1, 2], "b": ["p", "q"]}).set_index(["a", "b"]),
        pd.DataFrame({"v": [1.0]}, index=pd.DatetimeIndex(["2024-01-01"], tz="UTC",
                                                          name="at")),
        pd.DataFrame({"n": [None, None]}, dtype=object),
    ],
    ids=["empty", "object-index", "multiindex", "tz-index", "all-null"],
)
def test_round_trip_shapes(cache: Cache, df: pd.DataFrame) -> None:
    assert cache.set("acme", "k", df, {}, ttl=None)
    entry = cache.get("acme", "k")
    assert entry is not None
    pd.testing.assert_frame_equal(entry.df, df)


def test_overwrite_and_delete(cache: Cache) -> None:
    cache.set("acme", "k", numbers(3), {"agent": 1}, ttl=None)
    cache.set("acme", "k", numbers(3, start=100), {"agent": 2}, ttl=None)
    entry = cache.get("acme", "k")
    assert entry is not None
    assert entry.df["x"].tolist() == [100, 101, 102]
    assert dict(entry.versions) == {"agent": 2}
    cache.delete("acme", "k")
    assert cache.get("acme", "k") is None
    cache.delete("acme", "k")  # missing: no error


def test_ttl_expiry_follows_the_clock(make_cache: MakeCache) -> None:
    """For Redis the 1 s EXPIRE has not fired yet: expires_at alone makes it a miss."""
    clock = Clock()
    cache = make_cache(clock=clock)
    cache.set("acme", "short", numbers(3), {}, ttl=1)
    cache.set("acme", "forever", numbers(3), {}, ttl=None)
    entry = cache.get("acme", "short")
    assert entry is not None
    assert entry.expires_at == clock.now + 1
    assert not entry.expired(clock.now + 0.999)
    assert entry.expired(clock.now + 1)
    clock.now += 0.5
    assert cache.get("acme", "short") is not None
    clock.now += 0.5
    assert cache.get("acme", "short") is None
    clock.now += 10**6
    assert cache.get("acme", "forever") is not None


def test_too_large_is_not_cached_and_warns_once(
    make_cache: MakeCache, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache(max_bytes=20_000)
    caplog.set_level(logging.WARNING, logger="reactive_nb.stores.cache")
    cache.set("acme", "big", numbers(10), {}, ttl=None)
    assert cache.get("acme", "big") is not None
    # A new result too large to keep replaces (removes) the old one.
    assert cache.set("acme", "big", numbers(10_000), {}, ttl=None) is False
    assert cache.get("acme", "big") is None
    assert cache.set("acme", "big2", numbers(20_000), {}, ttl=None) is False
    assert cache.get("acme", "big2") is None
    assert cache.set("acme", "small", numbers(10), {}, ttl=None) is True
    assert cache.get("acme", "small") is not None
    warnings = [r for r in caplog.records
                if r.name == "reactive_nb.stores.cache" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "max_bytes=20000" in warnings[0].getMessage()


def mutate(df: pd.DataFrame) -> None:
    df["x"] = 0
    df.iloc[0, 1] = -1.0
    df["new"] = 1
    with warnings.catch_warnings():
        # Deprecated in pandas 3.1, but notebooks still do it.
        warnings.filterwarnings("ignore", message="The inplace keyword")
        df.drop(index=[1, 2], inplace=True)


def test_mutating_a_hit_does_not_change_the_cache(cache: Cache) -> None:
    cache.set("acme", "k", numbers(5), {}, ttl=None)
    for _ in range(2):
        entry = cache.get("acme", "k")
        assert entry is not None
        mutate(entry.df)
    entry = cache.get("acme", "k")
    assert entry is not None
    pd.testing.assert_frame_equal(entry.df, numbers(5))


def test_mutating_the_stored_frame_afterwards_does_not_change_the_cache(cache: Cache) -> None:
    df = numbers(5)
    cache.set("acme", "k", df, {}, ttl=None)
    mutate(df)
    df.iloc[0, 0] = 99
    entry = cache.get("acme", "k")
    assert entry is not None
    pd.testing.assert_frame_equal(entry.df, numbers(5))


def test_clear_is_scoped_to_a_tenant(cache: Cache) -> None:
    for tenant in ("acme", "globex", "a*", "ab"):
        cache.set(tenant, "k", numbers(2), {}, ttl=None)
    cache.clear("acme")
    assert cache.get("acme", "k") is None
    assert cache.get("globex", "k") is not None
    cache.clear("a*")  # a tenant name, not a pattern
    assert cache.get("a*", "k") is None
    assert cache.get("ab", "k") is not None
    cache.clear()
    assert cache.get("globex", "k") is None
    assert cache.get("ab", "k") is None


def test_concurrent_use(make_cache: MakeCache) -> None:
    cache = make_cache(max_bytes=10_000)
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            start.wait(timeout=10)
            for j in range(50):
                key = f"k{(i + j) % 7}"
                cache.set("acme", key, numbers(20, start=j), {"t": j}, ttl=None)
                entry = cache.get("acme", key)
                if entry is not None:
                    assert len(entry.df) == 20
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert cache.nbytes <= 10_000  # -1 for Redis, which does not track it


# ---------------------------------------------------------------- memory only


def test_memory_lru_evicts_least_recently_used() -> None:
    one = entry_cost("a", numbers(100), {})  # what an entry counts against the bound
    cache = MemoryCache(max_bytes=3 * one)
    for key in "abc":
        assert cache.set("acme", key, numbers(100), {}, ttl=None)
    assert cache.nbytes == 3 * one
    assert cache.get("acme", "a") is not None  # a is now the most recent
    cache.set("acme", "d", numbers(100), {}, ttl=None)
    assert cache.get("acme", "b") is None
    assert [k for k in "acd" if cache.get("acme", k) is None] == []
    # A frame twice the size evicts the two least recently used (c, then a... order:
    # after the gets above, LRU order is a, c, d).
    cache.set("acme", "e", numbers(200), {}, ttl=None)
    assert cache.get("acme", "a") is None
    assert cache.get("acme", "c") is None
    assert cache.get("acme", "d") is not None
    assert cache.nbytes == one + entry_cost("e", numbers(200), {})
    assert len(cache) == 2


def test_memory_expired_entries_are_removed_on_get() -> None:
    clock = Clock()
    cache = MemoryCache(clock=clock)
    cache.set("acme", "k", numbers(10), {}, ttl=5)
    size = cache.nbytes
    assert size > 0
    clock.now += 5
    assert cache.get("acme", "k") is None
    assert cache.nbytes == 0
    assert len(cache) == 0


def test_memory_hit_is_a_lazy_copy() -> None:
    """A hit must not copy the rows: two hits share the stored buffers until written."""
    from reactive_nb.stores.cache.memory import copy_on_write

    if not copy_on_write():
        pytest.skip("pandas 2 without copy-on-write: hits are deep copies")
    cache = MemoryCache()
    cache.set("acme", "k", numbers(100_000), {}, ttl=None)
    first, second = cache.get("acme", "k"), cache.get("acme", "k")
    assert first is not None and second is not None
    assert first.df is not second.df
    assert np.shares_memory(first.df["x"].to_numpy(), second.df["x"].to_numpy())
    first.df.iloc[0, 0] = -5  # the write copies, on the writer's side only
    assert not np.shares_memory(first.df["x"].to_numpy(), second.df["x"].to_numpy())
    assert second.df.iloc[0, 0] == 0


def test_memory_clear_and_close_release_bytes() -> None:
    cache = MemoryCache()
    cache.set("acme", "k", numbers(10), {}, ttl=None)
    cache.set("globex", "k", numbers(10), {}, ttl=None)
    half = cache.nbytes // 2
    cache.clear("acme")
    assert cache.nbytes == half
    cache.close()
    assert cache.nbytes == 0


# ---------------------------------------------------------------- Redis only


@pytest.mark.redis
def test_redis_layout_and_expire(redis_client: Any, redis_prefix: str) -> None:
    import json

    import pyarrow as pa

    clock = Clock()
    cache = RedisCache(redis_client, prefix=redis_prefix, clock=clock)
    cache.set("acme", "f:{}", numbers(4), {"agent": 2}, ttl=2.5)
    key = f"{redis_prefix}:{{acme}}:cache:f:{{}}"
    fields = redis_client.hgetall(key)
    assert set(fields) == {b"meta", b"arrow"}
    meta = json.loads(fields[b"meta"])
    assert meta == {"format": 1, "versions": {"agent": 2}, "created_at": clock.now,
                    "expires_at": clock.now + 2.5, "nbytes": len(fields[b"arrow"])}
    table = pa.ipc.open_stream(fields[b"arrow"]).read_all()
    assert table.num_rows == 4
    assert redis_client.ttl(key) == 3  # ceil(2.5)
    cache.set("acme", "tiny", numbers(1), {}, ttl=0.01)
    assert redis_client.ttl(f"{redis_prefix}:{{acme}}:cache:tiny") == 1  # at least 1 s
    cache.set("acme", "f:{}", numbers(4), {}, ttl=None)
    assert redis_client.ttl(key) == -1  # the rewrite dropped the old EXPIRE


@pytest.mark.redis
@pytest.mark.parametrize(
    "fields",
    [
        {"meta": b"not json", "arrow": b""},
        {"meta": b'{"format":999}', "arrow": b""},
        {"meta": b'{"format":1,"versions":{},"created_at":1,"expires_at":null,"nbytes":3}',
         "arrow": b"garbage"},
        {"meta": b'{"format":1,"versions":[],"created_at":1,"expires_at":null,"nbytes":3}',
         "arrow": b""},
        {"other": b"x"},
        None,  # not even a hash
    ],
    ids=["bad-json", "foreign-format", "bad-arrow", "bad-meta", "no-meta", "wrong-type"],
)
def test_redis_unreadable_entry_is_a_logged_miss_and_deleted(
    redis_client: Any, redis_prefix: str, fields: dict[str, bytes] | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="reactive_nb.stores.cache")
    cache = RedisCache(redis_client, prefix=redis_prefix)
    key = f"{redis_prefix}:{{acme}}:cache:k"
    for _ in range(2):
        if fields is None:
            redis_client.set(key, b"a string")
        else:
            redis_client.hset(key, mapping=fields)
        assert cache.get("acme", "k") is None
        assert not redis_client.exists(key)
    assert len([r for r in caplog.records if r.name == "reactive_nb.stores.cache"]) == 1
    cache.set("acme", "k", numbers(2), {}, ttl=None)
    assert cache.get("acme", "k") is not None


@pytest.mark.redis
def test_redis_entries_are_shared_between_clients(redis_url: str, redis_prefix: str) -> None:
    import redis

    with redis.Redis.from_url(redis_url) as c1, \
            redis.Redis.from_url(redis_url, decode_responses=True) as c2:
        writer, reader = RedisCache(c1, prefix=redis_prefix), RedisCache(c2, prefix=redis_prefix)
        writer.set("acme", "k", every_dtype(), {"agent": 7}, ttl=None)
        entry = reader.get("acme", "k")
        assert entry is not None
        pd.testing.assert_frame_equal(entry.df, every_dtype())
        assert dict(entry.versions) == {"agent": 7}


@pytest.mark.redis
def test_redis_clear_leaves_other_keys(redis_client: Any, redis_prefix: str) -> None:
    cache = RedisCache(redis_client, prefix=redis_prefix)
    versions_key = f"{redis_prefix}:{{acme}}:versions"
    redis_client.hset(versions_key, "agent", 1)
    other = RedisCache(redis_client, prefix=redis_prefix + "x")
    other.set("acme", "k", numbers(2), {}, ttl=None)
    for i in range(1200):  # more than one SCAN page and one delete batch
        redis_client.hset(f"{redis_prefix}:{{acme}}:cache:{i}", "meta", "x")
    cache.set("acme", "k", numbers(2), {}, ttl=None)
    cache.clear()
    assert list(redis_client.scan_iter(match=f"{redis_prefix}:*:cache:*")) == []
    assert redis_client.hget(versions_key, "agent") == b"1"
    assert other.get("acme", "k") is not None
    other.clear()
    assert cache.nbytes == -1


def test_byte_count_matches_pandas_deep_memory_usage() -> None:
    import decimal

    import numpy as np
    import pandas as pd

    from reactive_nb.stores.cache.memory import frame_nbytes

    df = pd.DataFrame({
        "i": np.arange(100), "f": np.random.default_rng(1).random(100),
        "s": [f"text {i}" for i in range(100)], "t": pd.date_range("2026", periods=100),
        "n": pd.array([1, None] * 50, dtype="Int64"),
        "d": [decimal.Decimal(i) for i in range(100)],
    }, index=pd.Index([f"k{i}" for i in range(100)], name="key"))
    assert frame_nbytes(df) == int(df.memory_usage(deep=True, index=True).sum())


def test_validity_is_checked_before_the_frame_is_served(cache: Cache) -> None:
    import pandas as pd

    df = pd.DataFrame({"x": [1, 2, 3]})
    cache.set("acme", "k", df, {"agent": 4}, None)
    seen: list[dict[str, int]] = []

    def stale(versions: object) -> bool:
        seen.append(dict(versions))  # type: ignore[call-overload]
        return False

    assert cache.get("acme", "k", stale) is None
    assert seen == [{"agent": 4}]
    entry = cache.get("acme", "k", lambda versions: versions["agent"] == 4)
    assert entry is not None and list(entry.df["x"]) == [1, 2, 3]

    class Down(ConnectionError):
        pass

    def unreachable(versions: object) -> bool:
        raise Down("versions store unreachable")

    with pytest.raises(Down):  # the caller's error, not a corrupt entry
        cache.get("acme", "k", unreachable)
    assert cache.get("acme", "k") is not None  # and the entry was not dropped


# -- the codec's plain fast path -----------------------------------------------------------

_PLAIN_COLUMNS = {  # dtype -> values for 3 rows
    "int8": [1, -2, 3], "int64": [1, 2, 2**40], "uint16": [0, 7, 65535],
    "float32": [1.5, np.nan, -0.0], "float64": [np.inf, np.nan, 2.0], "bool": [True, False, True],
}


def plain_numbers() -> pd.DataFrame:
    """One column of each plain dtype over the default index: the fast path's frame."""
    return pd.DataFrame({k: pd.Series(v, dtype=k) for k, v in _PLAIN_COLUMNS.items()})


_OTHER_COLUMNS = {  # what the fast path must leave to pandas' metadata
    "Int64": pd.array([1, None, 3], dtype="Int64"),
    "str": ["a", None, "c"],
    "object": pd.Series(["x", None, "z"], dtype=object),
    "datetime64[ns]": pd.to_datetime(["2024-01-01", None, "2024-01-03"]),
    "category": pd.Categorical(["lo", "hi", "lo"]),
}


def _frames() -> Any:
    """Frames of up to four columns of plain and other dtypes, with every index, column
    label and attrs variant that a plain frame differs from by one field of metadata."""
    from hypothesis import strategies as st

    dtypes = st.lists(st.sampled_from([*_PLAIN_COLUMNS, *_OTHER_COLUMNS]), min_size=1,
                      max_size=4)
    labels = st.sampled_from(["names", "ints", "named", "object"])
    index = st.sampled_from(["default", "start", "step", "named", "ints"])

    @st.composite
    def frame(draw: Any) -> pd.DataFrame:
        kinds, label, where = draw(dtypes), draw(labels), draw(index)
        data = {f"c{i}": (_PLAIN_COLUMNS[k] if k in _PLAIN_COLUMNS else _OTHER_COLUMNS[k])
                for i, k in enumerate(kinds)}
        df = pd.DataFrame({name: pd.Series(values, dtype=kind if kind in _PLAIN_COLUMNS
                                           else None)
                           for (name, values), kind in zip(data.items(), kinds, strict=True)})
        if label == "ints":
            df.columns = pd.Index(list(range(10, 10 + df.shape[1])))
        elif label == "named":
            df.columns.name = "field"
        elif label == "object":
            df.columns = pd.Index(list(df.columns), dtype=object)
        df.index = {"default": pd.RangeIndex(3), "start": pd.RangeIndex(5, 8),
                    "step": pd.RangeIndex(0, 6, 2), "named": pd.RangeIndex(3, name="row"),
                    "ints": pd.Index([3, 1, 2])}[where]
        if draw(st.booleans()):
            df.attrs["source"] = "test"
        return df

    return frame()


def test_every_frame_reads_back_identical_whichever_path_decodes_it() -> None:
    """The plain path skips pandas' metadata, so any field of it that it fails to check
    (index start or name, column label dtype or name, attrs) shows up as a difference."""
    from hypothesis import HealthCheck, given, settings

    from reactive_nb.stores.cache.arrow import from_arrow_bytes, to_arrow_bytes

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(_frames())
    def check(df: pd.DataFrame) -> None:
        back = from_arrow_bytes(to_arrow_bytes(df))
        pd.testing.assert_frame_equal(back, df, check_exact=True, check_index_type=True,
                                      check_column_type=True)
        assert back.attrs == df.attrs
        back.columns.name = "renamed"  # the labels are the frame's own
        assert from_arrow_bytes(to_arrow_bytes(df)).columns.name == df.columns.name

    check()


def test_a_plain_numeric_frame_takes_the_fast_path_and_its_near_misses_do_not() -> None:
    import pyarrow as pa

    from reactive_nb.stores.cache.arrow import plain

    def is_plain(df: pd.DataFrame) -> bool:
        table = pa.Table.from_pandas(df, preserve_index=None)
        return plain(table, table.schema.pandas_metadata)

    base = plain_numbers()
    assert is_plain(base)
    assert not is_plain(base.set_axis(pd.RangeIndex(1, 4)))
    assert not is_plain(base.set_axis(pd.RangeIndex(3, name="row")))
    assert not is_plain(base.set_axis(list(range(10, 10 + base.shape[1])), axis=1))
    with_attrs = base.copy()
    with_attrs.attrs["source"] = "x"
    assert not is_plain(with_attrs)
    for kind, values in _OTHER_COLUMNS.items():
        assert not is_plain(base.assign(other=values)), kind


def test_a_plain_frame_decodes_identical_without_pandas_block_api(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """pandas 2 has no ``pandas.api.internals.create_dataframe_from_blocks``: the plain
    path falls back to ``to_pandas`` without the metadata, same frame."""
    import importlib

    from reactive_nb.stores.cache.arrow import from_arrow_bytes, to_arrow_bytes

    real = importlib.import_module

    def without_internals(name: str, package: str | None = None) -> Any:
        if name == "pandas.api.internals":
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_internals)
    df = plain_numbers()
    pd.testing.assert_frame_equal(from_arrow_bytes(to_arrow_bytes(df)), df, check_exact=True,
                                  check_column_type=True)
