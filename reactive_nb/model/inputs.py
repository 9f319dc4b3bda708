"""Canonical, type-tagged JSON of a function's inputs: the part of a cache key after ``name:``.

Plain JSON values (str, int, bool, finite float, None, lists, dicts with str keys) encode as
``json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` does, so ordinary
keys keep their historical form. Every other value becomes an object whose first key is a tag
starting with ``$``, and user dict keys starting with ``$`` gain one more ``$``, so distinct
values never share a key (None, NaN and NaT; ``(1, 2)`` and ``[1, 2]``; ``b"abc"`` and
``"abc"``; a datetime and its ISO string). Tags:

============================  ===========================================================
``{"$tuple": [...]}``         tuple
``{"$namedtuple": q, "value": {...}}``  namedtuple, ``q`` is ``module.QualName``
``{"$set": [...]}``           set or frozenset, items sorted by their canonical text
``{"$map": [[k, v], ...]}``   dict with a non-str key, pairs sorted by the key's text
``{"$bytes": base64}``        bytes, bytearray, memoryview
``{"$float": "nan"}``         NaN, ``"inf"`` and ``"-inf"`` likewise
``{"$int": hex}``             int too long for JSON's decimal conversion
``{"$complex": [re, im]}``    complex
``{"$datetime": iso}``        datetime (offset kept, naive stays naive); ``"tz"`` names a
                              zone that is not a fixed offset; sub-microsecond digits kept
``{"$date": iso}``            date; ``{"$time": iso}`` time
``{"$timedelta": seconds}``   timedelta, the exact total seconds as decimal text
``{"$decimal": str}``         Decimal; ``{"$uuid": str}`` UUID; ``{"$path": str}`` PurePath
``{"$enum": "m.Cls.NAME", "value": v}``  Enum member (``value`` left out if unencodable)
``{"$model": q, "value": {...}}``        pydantic model (its fields and extras)
``{"$dataclass": q, "value": {...}}``    dataclass instance
``{"$object": q, "value": str}``         ipaddress objects and pydantic URLs
``{"$ndarray": {"dtype", "shape", "values"}}``  numpy array
``{"$missing": "NaT"}``       pandas/numpy NaT; ``"NA"`` for ``pandas.NA``
============================  ===========================================================

numpy and pandas scalars encode as the Python value they stand for (``numpy.int64(3)`` as
``3``, ``pandas.Timestamp`` as a datetime). Any other type raises TypeError naming it rather
than falling back to ``repr()``, whose memory addresses would make every key unique.
numpy, pandas, pydantic, decimal, uuid, pathlib and ipaddress are never imported here: a value
can only be an instance of a class whose module is already loaded, so ``sys.modules`` suffices.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from enum import Enum
from typing import Any

__all__ = ["canonical_json"]

#: Containers nested deeper than this are refused (recursion would otherwise overflow).
MAX_DEPTH = 100
#: Longer ints are tagged as hex: ``json`` refuses to print more than 4300 decimal digits.
_MAX_INT_BITS = 4096
#: numpy time units in seconds, as (multiplier, decimal digits): value = count * m / 10**d.
_UNIT_SECONDS: dict[str, tuple[int, int]] = {
    "W": (604800, 0), "D": (86400, 0), "h": (3600, 0), "m": (60, 0), "s": (1, 0),
    "ms": (1, 3), "us": (1, 6), "ns": (1, 9), "ps": (1, 12), "fs": (1, 15), "as": (1, 18),
}
#: Types (module, class) whose str() is a faithful, address-free text of the value.
_TEXT_TYPES = (
    ("ipaddress", "IPv4Address"), ("ipaddress", "IPv6Address"),
    ("ipaddress", "IPv4Network"), ("ipaddress", "IPv6Network"),
    ("ipaddress", "IPv4Interface"), ("ipaddress", "IPv6Interface"),
    ("pydantic_core", "Url"), ("pydantic_core", "MultiHostUrl"),
)


def canonical_json(value: Mapping[str, Any]) -> str:
    """Deterministic compact JSON of ``value`` that differs whenever the values differ.

    Raises TypeError for a value it cannot encode faithfully (an unknown type, a circular
    reference, nesting deeper than MAX_DEPTH); callers report it as an input error.
    """
    if not isinstance(value, Mapping):
        raise TypeError(f"inputs must be a mapping, not {_qualname(type(value))}")
    return _dumps(_Encoder().encode(value))


def _dumps(tree: Any) -> str:
    return json.dumps(tree, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _escape(key: str) -> str:
    """User keys starting with ``$`` get one more, so they never read as a tag."""
    return "$" + key if key.startswith("$") else key


def _loaded(module: str, name: str) -> Any:
    """The class ``module.name`` if that module is imported, else None (never imports it)."""
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


def _seconds(count: int, digits: int) -> str:
    """Exact decimal text of ``count / 10**digits`` without trailing zeros (``"-1.5"``)."""
    sign = "-" if count < 0 else ""
    whole, frac = divmod(abs(count), 10**digits)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{str(frac).zfill(digits).rstrip('0')}"


def _float(v: float) -> Any:
    if math.isfinite(v):
        return v
    return {"$float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}


def _zone(tz: tzinfo | None) -> str | None:
    """The name of a zone that is more than a fixed offset (whose isoformat hides it)."""
    if tz is None or isinstance(tz, timezone):
        return None
    name = getattr(tz, "key", None) or getattr(tz, "zone", None)
    return name if isinstance(name, str) else _qualname(type(tz))


_NAT = {"$missing": "NaT"}


class _Encoder:
    """Turns a value into a JSON-ready tree; ``_active`` holds the containers on the path."""

    __slots__ = ("_active",)

    def __init__(self) -> None:
        self._active: set[int] = set()

    def encode(self, v: Any) -> Any:
        t = type(v)
        if t is str or t is bool or v is None:
            return v
        if t is int:
            return v if v.bit_length() <= _MAX_INT_BITS else {"$int": hex(v)}
        if t is float:
            return _float(v)
        if t is dict:
            return self._nested(v, lambda: self._dict(v))
        if t is list:
            return self._nested(v, lambda: [self.encode(x) for x in v])
        if t is tuple:
            return self._nested(v, lambda: {"$tuple": [self.encode(x) for x in v]})
        return self._other(v)

    def _nested(self, v: object, encode: Callable[[], Any]) -> Any:
        """Encode a container, refusing cycles and excessive depth."""
        key = id(v)
        if key in self._active:
            raise TypeError(f"input contains a circular reference through a "
                            f"{_qualname(type(v))}")
        if len(self._active) >= MAX_DEPTH:
            raise TypeError(f"input nests containers deeper than {MAX_DEPTH} levels")
        self._active.add(key)
        try:
            return encode()
        finally:
            self._active.discard(key)

    def _dict(self, d: Mapping[Any, Any]) -> Any:
        if all(isinstance(k, str) and not isinstance(k, Enum) for k in d):
            return {_escape(str.__str__(k)): self.encode(x) for k, x in d.items()}
        entries = []
        for key, item in d.items():
            encoded = self.encode(key)
            entries.append((_dumps(encoded), encoded, self.encode(item)))
        entries.sort(key=lambda e: e[0])
        return {"$map": [[k, x] for _, k, x in entries]}

    def _sorted(self, items: Any) -> list[Any]:
        encoded = [self.encode(x) for x in items]
        return [e for _, e in sorted(((_dumps(e), e) for e in encoded), key=lambda p: p[0])]

    def _fields(self, tag: str, v: object, fields: Mapping[str, Any]) -> Any:
        return self._nested(v, lambda: {tag: _qualname(type(v)), "value": self._dict(fields)})

    def _other(self, v: Any) -> Any:
        cls = type(v)
        module = cls.__module__ or ""
        if module == "numpy":
            return self._numpy(v)
        if module.startswith("pandas"):
            pd = sys.modules.get("pandas")
            if pd is not None and v is pd.NaT:
                return _NAT
            if pd is not None and v is pd.NA:
                return {"$missing": "NA"}
        if isinstance(v, Enum):
            try:
                return {"$enum": f"{_qualname(cls)}.{v.name}", "value": self.encode(v.value)}
            except TypeError:
                return {"$enum": f"{_qualname(cls)}.{v.name}"}
        if isinstance(v, int):
            return self.encode(int(v))
        if isinstance(v, float):
            return _float(float(v))
        if isinstance(v, str):
            return str.__str__(v)
        if isinstance(v, complex):
            return {"$complex": [_float(v.real), _float(v.imag)]}
        if isinstance(v, datetime):
            return self._datetime(v)
        if isinstance(v, date):
            return {"$date": date.isoformat(v)}
        if isinstance(v, time):
            zone = _zone(v.tzinfo)
            text = time.isoformat(v)
            return {"$time": text} if zone is None else {"$time": text, "tz": zone}
        if isinstance(v, timedelta):
            count = (v.days * 86400 + v.seconds) * 10**6 + v.microseconds
            extra = getattr(v, "nanoseconds", 0) if cls is not timedelta else 0
            return {"$timedelta": _seconds(count * 1000 + extra, 9)}
        if isinstance(v, bytes | bytearray):
            return {"$bytes": base64.b64encode(bytes(v)).decode("ascii")}
        if isinstance(v, memoryview):
            return {"$bytes": base64.b64encode(v.tobytes()).decode("ascii")}
        if isinstance(v, Mapping):
            return self._nested(v, lambda: self._dict(v))
        if isinstance(v, set | frozenset):
            return self._nested(v, lambda: {"$set": self._sorted(v)})
        if isinstance(v, tuple):
            fields = getattr(cls, "_fields", None)
            if isinstance(fields, tuple) and all(isinstance(f, str) for f in fields):
                return self._fields("$namedtuple", v, dict(zip(fields, v, strict=True)))
            return self._nested(v, lambda: {"$tuple": [self.encode(x) for x in v]})
        if isinstance(v, list):
            return self._nested(v, lambda: [self.encode(x) for x in v])
        return self._library(v)

    def _library(self, v: Any) -> Any:
        """Types from modules that may not be imported: looked up, never imported."""
        cls = type(v)
        decimal = _loaded("decimal", "Decimal")
        if decimal is not None and isinstance(v, decimal):
            return {"$decimal": str(v)}
        uuid = _loaded("uuid", "UUID")
        if uuid is not None and isinstance(v, uuid):
            return {"$uuid": str(v)}
        path = _loaded("pathlib", "PurePath")
        if path is not None and isinstance(v, path):
            return {"$path": str(v)}
        model = _loaded("pydantic", "BaseModel")
        if model is not None and isinstance(v, model):
            fields = {name: getattr(v, name) for name in cls.model_fields}
            fields.update(v.model_extra or {})
            return self._fields("$model", v, fields)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return self._fields("$dataclass", v, {
                f.name: getattr(v, f.name) for f in dataclasses.fields(v)})
        for module, name in _TEXT_TYPES:
            text_type = _loaded(module, name)
            if text_type is not None and isinstance(v, text_type):
                return {"$object": f"{module}.{name}", "value": str(v)}
        raise TypeError(f"cannot use a {_qualname(cls)} as an input: it has no canonical "
                        "form (pass plain values, or give the function a key=)")

    def _datetime(self, v: datetime) -> Any:
        nanos = getattr(v, "nanosecond", 0) if type(v) is not datetime else 0
        if nanos:
            # 'YYYY-MM-DDTHH:MM:SS.ffffff' is 26 characters; the nanoseconds follow it.
            text = datetime.isoformat(v, timespec="microseconds")
            text = f"{text[:26]}{nanos:03d}{text[26:]}"
        else:
            text = datetime.isoformat(v)
        zone = _zone(v.tzinfo)
        return {"$datetime": text} if zone is None else {"$datetime": text, "tz": zone}

    def _numpy(self, v: Any) -> Any:
        np: Any = sys.modules["numpy"]
        if isinstance(v, np.ndarray):
            return self._nested(v, lambda: {"$ndarray": {
                "dtype": str(v.dtype), "shape": list(v.shape), "values": self._array(v)}})
        if isinstance(v, np.datetime64):
            if np.isnat(v):
                return _NAT
            micros = v.astype("datetime64[us]")
            if micros == v:
                item = micros.item()
                if isinstance(item, datetime):
                    return self._datetime(item)
            return {"$datetime": str(v)}  # finer than microseconds or beyond year 9999
        if isinstance(v, np.timedelta64):
            if np.isnat(v):
                return _NAT
            unit, step = np.datetime_data(v.dtype)
            if unit not in _UNIT_SECONDS:  # months and years have no fixed length
                return {"$timedelta": str(v)}
            factor, digits = _UNIT_SECONDS[unit]
            return {"$timedelta": _seconds(int(v.astype(np.int64)) * step * factor, digits)}
        if isinstance(v, np.generic):
            item = v.item()
            if isinstance(item, np.generic):  # e.g. longdouble: no exact Python value
                raise TypeError(f"cannot use a numpy.{type(v).__name__} as an input")
            return self.encode(item)
        return self._library(v)

    def _array(self, a: Any) -> Any:
        """Nested lists of an array's items; times go item by item (tolist() gives ints)."""
        if a.dtype.kind not in "Mm":
            return self.encode(a.tolist())
        if a.ndim == 0:
            return self.encode(a[()])
        if a.ndim == 1:
            return [self.encode(x) for x in a]
        return [self._array(sub) for sub in a]
