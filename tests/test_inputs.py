"""canonical_json: cache-key text of inputs, identical for equal inputs, distinct otherwise."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import ipaddress
import json
import math
import pathlib
import subprocess
import sys
import uuid
import zoneinfo
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reactive_nb.model.inputs import MAX_DEPTH, canonical_json


def key(value: Any) -> str:
    return canonical_json({"v": value})


class Color(enum.Enum):
    RED = 1
    BLUE = "blue"


class Level(enum.IntEnum):
    ONE = 1


class Point(NamedTuple):
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class Span:
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class OtherSpan:
    start: int
    end: int


class Window(pydantic.BaseModel):
    start: int
    end: int


PARIS = zoneinfo.ZoneInfo("Europe/Paris")
PLUS_ONE = dt.timezone(dt.timedelta(hours=1))
NOON = dt.datetime(2024, 5, 1, 12, 0)

# -- the historical form of ordinary keys ------------------------------------------------------


def test_ordinary_key_is_exactly_the_historical_form() -> None:
    assert canonical_json({"organization_id": "acme", "limit": 50}) == (
        '{"limit":50,"organization_id":"acme"}')


@pytest.mark.parametrize("inputs", [
    {"limit": 50, "organization_id": "acme"},
    {"name": "Zoë ✓", "ratio": 0.25, "big": 10**30, "flag": False, "none": None},
    {"ids": [3, 1, 2], "filters": {"b": [1.5, "x"], "a": {"z": None, "y": True}}},
    {"empty": [], "nothing": {}, "neg": -0.0, "small": 1e-300, "large": 1e300},
])
def test_plain_json_inputs_encode_as_json_dumps_did(inputs: dict[str, Any]) -> None:
    historical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(inputs) == historical


# -- exact tagged forms (the format is part of every stored key) -------------------------------

EXACT = [
    ((1, 2), '{"$tuple":[1,2]}'),
    ({3, 1, 2}, '{"$set":[1,2,3]}'),
    (b"abc", '{"$bytes":"YWJj"}'),
    (float("nan"), '{"$float":"nan"}'),
    (float("-inf"), '{"$float":"-inf"}'),
    (NOON, '{"$datetime":"2024-05-01T12:00:00"}'),
    (NOON.replace(tzinfo=PLUS_ONE), '{"$datetime":"2024-05-01T12:00:00+01:00"}'),
    (NOON.replace(tzinfo=PARIS), '{"$datetime":"2024-05-01T12:00:00+02:00","tz":"Europe/Paris"}'),
    (dt.date(2024, 5, 1), '{"$date":"2024-05-01"}'),
    (dt.time(9, 30), '{"$time":"09:30:00"}'),
    (dt.timedelta(minutes=1, milliseconds=500), '{"$timedelta":"60.5"}'),
    (dt.timedelta(microseconds=-1), '{"$timedelta":"-0.000001"}'),
    (decimal.Decimal("1.10"), '{"$decimal":"1.10"}'),
    (uuid.UUID(int=1), '{"$uuid":"00000000-0000-0000-0000-000000000001"}'),
    (Color.RED, '{"$enum":"HERE.Color.RED","value":1}'),
    (pathlib.PurePosixPath("/tmp/x"), '{"$path":"/tmp/x"}'),
    (Span(1, 2), '{"$dataclass":"HERE.Span","value":{"end":2,"start":1}}'),
    (Window(start=1, end=2), '{"$model":"HERE.Window","value":{"end":2,"start":1}}'),
    (Point(1, 2), '{"$namedtuple":"HERE.Point","value":{"x":1,"y":2}}'),
    ({"$tuple": [1]}, '{"$$tuple":[1]}'),
    ({"$$a": 1, "a": 2}, '{"$$$a":1,"a":2}'),
    ({2: "b", "1": "a"}, '{"$map":[["1","a"],[2,"b"]]}'),
    (1 + 2j, '{"$complex":[1.0,2.0]}'),
    (ipaddress.ip_address("10.0.0.1"), '{"$object":"ipaddress.IPv4Address","value":"10.0.0.1"}'),
    (pd.NaT, '{"$missing":"NaT"}'),
    (pd.NA, '{"$missing":"NA"}'),
    (np.array([[1, 2], [3, 4]], dtype=np.int32),
     '{"$ndarray":{"dtype":"int32","shape":[2,2],"values":[[1,2],[3,4]]}}'),
]


@pytest.mark.parametrize(("value", "expected"), EXACT, ids=[repr(v)[:40] for v, _ in EXACT])
def test_tagged_forms(value: Any, expected: str) -> None:
    """``HERE`` stands for this module's name, which depends on how pytest imports it."""
    assert key(value) == '{"v":' + expected.replace("HERE.", f"{__name__}.") + "}"


# -- distinct values give distinct keys ---------------------------------------------------------

DIFFERENT = [
    ("None/NaN", None, float("nan")),
    ("None/NaT", None, pd.NaT),
    ("NaN/NaT", float("nan"), pd.NaT),
    ("NaT/NA", pd.NaT, pd.NA),
    ("None/NA", None, pd.NA),
    ("NaN/'nan'", float("nan"), "nan"),
    ("inf/-inf", float("inf"), float("-inf")),
    ("tuple/list", (1, 2), [1, 2]),
    ("nested tuple/list", [(1, 2)], [[1, 2]]),
    ("bytes/str", b"abc", "abc"),
    ("bytes/base64 str", b"abc", "YWJj"),
    ("datetime/iso", NOON, NOON.isoformat()),
    ("date/iso", dt.date(2024, 5, 1), "2024-05-01"),
    ("date/datetime", dt.date(2024, 5, 1), dt.datetime(2024, 5, 1)),
    ("time/iso", dt.time(9, 30), "09:30:00"),
    ("naive/utc", NOON, NOON.replace(tzinfo=dt.timezone.utc)),
    ("zone/fixed offset", NOON.replace(tzinfo=PARIS), NOON.replace(tzinfo=dt.timezone(
        dt.timedelta(hours=2)))),
    ("1/True", 1, True),
    ("0/False", 0, False),
    ("1/1.0", 1, 1.0),
    ("0.0/-0.0", 0.0, -0.0),
    ("int/Decimal", 1, decimal.Decimal(1)),
    ("Decimal/str", decimal.Decimal("1.5"), "1.5"),
    ("UUID/str", uuid.UUID(int=1), str(uuid.UUID(int=1))),
    ("path/str", pathlib.PurePosixPath("a"), "a"),
    ("enum/value", Color.BLUE, "blue"),
    ("IntEnum/int", Level.ONE, 1),
    ("namedtuple/tuple", Point(1, 2), (1, 2)),
    ("dataclass/dict", Span(1, 2), {"start": 1, "end": 2}),
    ("dataclass/same fields", Span(1, 2), OtherSpan(1, 2)),
    ("model/dict", Window(start=1, end=2), {"start": 1, "end": 2}),
    ("model/dataclass", Window(start=1, end=2), Span(1, 2)),
    ("set/list", {1, 2}, [1, 2]),
    ("user $tuple/tuple", {"$tuple": [1, 2]}, (1, 2)),
    ("user $ key/escaped", {"$a": 1}, {"$$a": 1}),
    ("int key/str key", {1: "a"}, {"1": "a"}),
    ("tuple key/list value", {(1, 2): 3}, {"$map": [[{"$tuple": [1, 2]}, 3]]}),
    ("timedelta/seconds", dt.timedelta(seconds=1), 1),
    ("timedelta beyond float precision", dt.timedelta(days=999_999_999),
     dt.timedelta(days=999_999_999, microseconds=1)),
    ("timedelta/'1'", dt.timedelta(seconds=1), "1"),
    ("ns timestamp/us timestamp", pd.Timestamp("2024-05-01 12:00:00.000000001"),
     pd.Timestamp("2024-05-01 12:00:00")),
    ("ndarray/list", np.array([1, 2]), [1, 2]),
    ("ndarray dtypes", np.array([1, 2], dtype=np.int32), np.array([1, 2], dtype=np.int64)),
    ("ndarray shapes", np.zeros((0, 3)), np.zeros((0,))),
    ("numpy int/float", np.int64(1), np.float64(1.0)),
    ("huge ints", 2**5000, 2**5000 + 1),
    ("complex/tuple", 1 + 2j, (1.0, 2.0)),
    ("IPv4 network/interface", ipaddress.ip_network("10.0.0.0/8"),
     ipaddress.ip_interface("10.0.0.0/8")),
]


@pytest.mark.parametrize(("a", "b"), [(a, b) for _, a, b in DIFFERENT],
                         ids=[name for name, _, _ in DIFFERENT])
def test_distinct_values_give_distinct_keys(a: Any, b: Any) -> None:
    assert key(a) != key(b)


# -- values a handler cannot tell apart give one key ------------------------------------------

EQUAL = [
    ("dict order", {"a": 1, "b": 2}, {"b": 2, "a": 1}),
    ("set order", {"x", "y", "z", "w"}, frozenset(["w", "z", "y", "x"])),
    ("map order", {2: "b", 1: "a"}, {1: "a", 2: "b"}),
    ("OrderedDict/dict", collections.OrderedDict(a=1), {"a": 1}),
    ("bytearray/bytes", bytearray(b"ab"), b"ab"),
    ("memoryview/bytes", memoryview(b"ab"), b"ab"),
    ("numpy int64", np.int64(3), 3),
    ("numpy uint8", np.uint8(200), 200),
    ("numpy float64", np.float64(1.5), 1.5),
    ("numpy float32", np.float32(0.5), 0.5),
    ("numpy nan", np.float64("nan"), float("nan")),
    ("numpy bool", np.bool_(True), True),
    ("numpy str", np.str_("acme"), "acme"),
    ("numpy bytes", np.bytes_(b"ab"), b"ab"),
    ("numpy datetime64 minutes", np.datetime64("2024-05-01T12:00"), NOON),
    ("numpy datetime64 ns", np.datetime64("2024-05-01T12:00:00.000000000"), NOON),
    ("numpy datetime64 ns nanos", np.datetime64("2024-05-01T12:00:00.000000001"),
     pd.Timestamp("2024-05-01 12:00:00.000000001")),
    ("numpy NaT", np.datetime64("NaT"), pd.NaT),
    ("numpy timedelta NaT", np.timedelta64("NaT"), pd.NaT),
    ("numpy timedelta64", np.timedelta64(1500, "ms"), dt.timedelta(seconds=1.5)),
    ("numpy timedelta64 weeks", np.timedelta64(1, "W"), dt.timedelta(days=7)),
    ("pandas Timestamp", pd.Timestamp("2024-05-01 12:00"), NOON),
    ("pandas Timestamp utc", pd.Timestamp("2024-05-01 12:00", tz="UTC"),
     NOON.replace(tzinfo=dt.timezone.utc)),
    ("pandas Timestamp zone", pd.Timestamp("2024-05-01 12:00", tz="Europe/Paris"),
     NOON.replace(tzinfo=PARIS)),
    ("pandas Timedelta", pd.Timedelta(seconds=90), dt.timedelta(seconds=90)),
    ("pandas Timedelta ns", pd.Timedelta(1, "ns"), np.timedelta64(1, "ns")),
    ("numpy in containers", [np.int64(1), {"k": np.float64(2.5)}], [1, {"k": 2.5}]),
    ("datetime ndarray", np.array(["2024-05-01T12:00"], dtype="datetime64[ns]"),
     np.array(["2024-05-01T12:00"], dtype="datetime64[ns]")),
]


@pytest.mark.parametrize(("a", "b"), [(a, b) for _, a, b in EQUAL],
                         ids=[name for name, _, _ in EQUAL])
def test_equivalent_values_give_one_key(a: Any, b: Any) -> None:
    assert key(a) == key(b)


def test_numpy_scalars_in_inputs_match_python_inputs() -> None:
    assert canonical_json({"limit": np.int64(50), "organization_id": np.str_("acme")}) == (
        '{"limit":50,"organization_id":"acme"}')


# -- refusals ------------------------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize("value", [object(), Opaque(), lambda: 1, range(3), pd.Series([1])],
                         ids=["object", "Opaque", "lambda", "range", "Series"])
def test_unknown_types_raise_type_error_naming_the_type(value: Any) -> None:
    with pytest.raises(TypeError, match=type(value).__qualname__) as info:
        key(value)
    assert "0x" not in str(info.value)


def test_circular_reference_is_a_type_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="circular"):
        key(loop)


def test_shared_but_acyclic_values_are_fine() -> None:
    shared = [1]
    assert key([shared, shared]) == '{"v":[[1],[1]]}'


def test_too_deep_nesting_is_a_type_error_not_a_recursion_error() -> None:
    deep: Any = 0
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(TypeError, match="deeper"):
        key(deep)


def test_non_mapping_inputs_are_refused() -> None:
    with pytest.raises(TypeError, match="mapping"):
        canonical_json([("limit", 50)])  # type: ignore[arg-type]


def test_numpy_and_pandas_are_not_imported() -> None:
    script = (
        "import sys, datetime, decimal\n"
        "import reactive_nb.model\n"
        "before = {m for m in ('numpy', 'pandas', 'pydantic') if m in sys.modules}\n"
        "from reactive_nb.model.inputs import canonical_json\n"
        "canonical_json({'a': (1, datetime.date(2024, 1, 1)), 'b': decimal.Decimal(1),\n"
        "                'c': {1: float('nan')}})\n"
        "try:\n"
        "    canonical_json({'x': object()})\n"
        "except TypeError:\n"
        "    pass\n"
        "after = {m for m in ('numpy', 'pandas', 'pydantic') if m in sys.modules}\n"
        "print(sorted(after - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=pathlib.Path(__file__).parent.parent)
    assert out.stdout.strip() == "[]"


# -- property: deterministic and injective over generated values ------------------------------

ATOMS_HASHABLE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, -0.0, 1.0, 0.5, math.inf, -math.inf]),
    st.text(alphabet="a1$-T:", max_size=3),
    st.sampled_from(["nan", "inf", "2024-05-01", "2024-05-01T12:00:00", "YWJj", "$tuple",
                     "$$tuple", "$float", "1", "1.0", "null", "true"]),
    st.binary(max_size=3),
    st.sampled_from([b"abc", b"\x00"]),
    st.sampled_from([decimal.Decimal(s) for s in ("1", "1.0", "1.5", "-0", "0")]),
    st.sampled_from([dt.date(2024, 5, 1), dt.date(2024, 5, 2)]),
    st.sampled_from([NOON, NOON.replace(tzinfo=dt.timezone.utc),
                     NOON.replace(tzinfo=PLUS_ONE), NOON.replace(microsecond=1)]),
    st.sampled_from([dt.time(12, 0), dt.time(12, 0, 0, 1)]),
    st.sampled_from([dt.timedelta(0), dt.timedelta(seconds=1), dt.timedelta(microseconds=-1),
                     dt.timedelta(days=1)]),
    st.sampled_from([uuid.UUID(int=0), uuid.UUID(int=1)]),
    st.sampled_from([Color.RED, Color.BLUE, Level.ONE]),
    st.sampled_from([pathlib.PurePosixPath("a"), pathlib.PurePosixPath("/a")]),
    st.sampled_from([1 + 0j, 1j]),
)
ATOMS = st.one_of(ATOMS_HASHABLE, st.just(math.nan))
HASHABLE = st.recursive(ATOMS_HASHABLE, lambda inner: st.tuples(inner, inner) | st.tuples(inner),
                        max_leaves=4)
#: Dict keys, including tag names, so user data that looks like a tag is generated too.
KEYS = st.text(alphabet="a$", max_size=3) | st.sampled_from(
    ["$tuple", "$$tuple", "$set", "$float", "$bytes", "$map", "$datetime", "value"])
VALUES = st.recursive(
    ATOMS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.frozensets(HASHABLE, max_size=3),
        st.dictionaries(KEYS, inner, max_size=3),
        st.dictionaries(HASHABLE, inner, max_size=3),
    ),
    max_leaves=8,
)


def tree(v: Any) -> Any:
    """The value and type of every node: what a cache key must tell apart."""
    t = type(v)
    if t is float:
        return ("float", "nan" if math.isnan(v) else v.hex())
    if t is complex:
        return ("complex", tree(v.real), tree(v.imag))
    if t in (list, tuple):
        return (t.__name__, tuple(tree(x) for x in v))
    if t is frozenset:
        return ("frozenset", frozenset(tree(x) for x in v))
    if t is dict:
        return ("dict", frozenset((tree(k), tree(x)) for k, x in v.items()))
    if t in (decimal.Decimal, dt.datetime):
        return (t.__name__, str(v))
    if t is dt.timedelta:
        return ("timedelta", v.days, v.seconds, v.microseconds)
    if isinstance(v, enum.Enum):
        return ("enum", t.__qualname__, v.name)
    return (t.__name__, v)


def rebuilt(v: Any) -> Any:
    """An equal copy whose dicts and sets were filled in the opposite order."""
    t = type(v)
    if t is list:
        return [rebuilt(x) for x in v]
    if t is tuple:
        return tuple(rebuilt(x) for x in v)
    if t is frozenset:
        return frozenset(rebuilt(x) for x in reversed(list(v)))
    if t is dict:
        return {rebuilt(k): rebuilt(x) for k, x in reversed(list(v.items()))}
    return v


@settings(max_examples=400, deadline=None)
@given(st.lists(VALUES, min_size=2, max_size=6))
def test_keys_are_deterministic_and_injective(values: list[Any]) -> None:
    """Keys are equal exactly when the type trees are; each key's own JSON (user data that
    looks like the tags) joins the comparison, and must not collide with the tagged value."""
    keys = [key(v) for v in values]
    for v, k in zip(values, keys, strict=True):
        assert key(rebuilt(v)) == k
    lookalikes = [json.loads(k)["v"] for k in keys]  # also proves it is valid, NaN-free JSON
    values = values + lookalikes
    keys = keys + [key(v) for v in lookalikes]
    for i, a in enumerate(values):
        for j in range(i + 1, len(values)):
            b = values[j]
            assert (keys[i] == keys[j]) == (tree(a) == tree(b)), (a, b, keys[i], keys[j])


@settings(max_examples=200, deadline=None)
@given(VALUES)
def test_a_value_and_its_mutation_differ(value: Any) -> None:
    """Wrapping a value in a tuple, list or set always changes its key."""
    assert key(value) != key((value,))
    assert key(value) != key([value])
    assert key([value]) != key((value,))
