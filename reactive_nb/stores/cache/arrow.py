"""The Arrow codec of the Redis cache: a frame as an Arrow IPC stream that reads back
identical, or :class:`Unencodable` when there is none."""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


class CorruptEntry(ValueError):
    """A Redis entry that this version cannot read."""


class Unencodable(ValueError):
    """A frame the Redis cache cannot store so that it reads back identical."""


#: Schema metadata key of what the codec adds to pandas' own metadata (a JSON object):
#: ``json``, positions of object columns stored as one JSON text per value; ``names``,
#: ``names_dtype`` and ``names_name``, the column labels when some repeat.
_CODEC_KEY = b"reactive_nb"
#: What pandas infers (skipping nulls) for an object column that Arrow stores as strings.
_STRINGS = ("string", "empty")
_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_DECODE = json.JSONDecoder().decode


def to_arrow_bytes(df: pd.DataFrame) -> bytes:
    """The frame, index included, as an Arrow IPC stream that :func:`from_arrow_bytes`
    turns back into an identical frame; :class:`Unencodable` when there is none."""
    return ipc_stream(to_arrow_table(df)[0])


def ipc_stream(table: pa.Table) -> bytes:
    """``table`` as the bytes of an Arrow IPC stream."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def to_arrow_table(df: pd.DataFrame) -> tuple[pa.Table, bool]:
    """The Arrow table of a frame, and whether it needs the codec's extras to read back.

    Object columns are where Arrow changes values: a list comes back as a numpy array, a
    dict gains the keys of the other rows, an int next to a None becomes a float, and
    ``inet`` or range values, mixed jsonb or a str next to an int do not convert at all.
    So an object column that is not plain strings is stored as JSON text per value when
    that reads back equal (jsonb, arrays, mixed scalars), natively when Arrow keeps its
    objects (bytes, dates, times, decimals, UUIDs), and otherwise the frame is refused.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from pandas.api.types import infer_dtype

    extra: dict[str, Any] = {}
    frame = df
    if not df.columns.is_unique:
        if df.columns.nlevels != 1 or not all(isinstance(c, str) for c in df.columns):
            raise Unencodable("repeated column labels that are not plain names")
        if not (df.columns.name is None or isinstance(df.columns.name, str)):
            raise Unencodable("repeated column labels under a label that is not a name")
        extra.update(names=list(df.columns), names_dtype=str(df.columns.dtype),
                     names_name=df.columns.name)
        frame = df.set_axis([f"{i}" for i in range(df.shape[1])], axis=1)
    for level in range(frame.index.nlevels):
        values = frame.index.get_level_values(level)
        if values.dtype == object and infer_dtype(values, skipna=True) not in _STRINGS:
            raise Unencodable(f"index level {level} holds objects that are not strings")
    texts: dict[int, list[str]] = {}
    for i, dtype in enumerate(frame.dtypes):
        if dtype != np.dtype(object):
            continue
        column = frame.iloc[:, i]
        kind = infer_dtype(column, skipna=True)
        if kind == "string" or (kind == "empty" and all(v is None for v in column)):
            continue
        encoded = _json_texts(column)
        if encoded is not None:
            texts[i] = encoded
        else:
            _check_native(column)
    if texts:
        frame = frame.copy(deep=False)
        for i, encoded_texts in texts.items():
            frame.isetitem(i, pd.Series(encoded_texts, index=frame.index, dtype=object,
                                        copy=False))
        extra["json"] = sorted(texts)
    try:
        # None: a RangeIndex is kept as metadata only, any other index as columns.
        table = pa.Table.from_pandas(frame, preserve_index=None)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise Unencodable(f"{type(exc).__name__}: {exc}") from exc
    if extra:
        metadata = dict(table.schema.metadata or {})
        metadata[_CODEC_KEY] = json.dumps(extra).encode()
        table = table.replace_schema_metadata(metadata)
    return table, bool(extra)


def _json_texts(column: pd.Series) -> list[str] | None:
    """One JSON text per value, or None unless every value reads back equal (a tuple
    would come back a list, an int key a str, NaN not at all)."""
    values = column.tolist()
    try:
        texts = [_ENCODE(v) for v in values]
    except (TypeError, ValueError, RecursionError):
        return None
    return texts if [_DECODE(t) for t in texts] == values else None


def _check_native(column: pd.Series) -> None:
    """Raise :class:`Unencodable` unless Arrow gives back the objects of this column."""
    import pyarrow as pa

    try:
        kind = pa.array(column, from_pandas=True).type
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise Unencodable(f"column {column.name!r}: {type(exc).__name__}: {exc}") from exc
    uuid_type = getattr(pa, "UuidType", None)
    if (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_date32(kind)
            or pa.types.is_decimal(kind)
            or (uuid_type is not None and isinstance(kind, uuid_type))):
        return
    if pa.types.is_time(kind) and all(v is None or v.tzinfo is None for v in column):
        return  # Arrow times have no time zone
    raise Unencodable(f"column {column.name!r}: its objects would come back as {kind}")


#: Frames whose Arrow columns take at least this many bytes decode on Arrow's thread pool.
THREADED_DECODE_BYTES = 1 << 20


def from_arrow_bytes(data: bytes) -> pd.DataFrame:
    """The inverse of :func:`to_arrow_bytes`."""
    import pandas as pd
    import pyarrow as pa

    table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    raw = (table.schema.metadata or {}).get(_CODEC_KEY)
    extra: dict[str, Any] = json.loads(raw) if raw else {}
    json_columns = {int(i) for i in extra.get("json", [])}
    meta = table.schema.pandas_metadata or {}
    index_fields = {c for c in meta.get("index_columns", []) if isinstance(c, str)}
    for field in table.schema:
        nested = pa.types.is_nested(field.type) or (
            pa.types.is_dictionary(field.type) and pa.types.is_nested(field.type.value_type))
        if nested and field.name not in index_fields:
            # Never written by this codec (it would not read back as the same objects):
            # an entry of an older version.
            raise CorruptEntry(f"column {field.name!r} is {field.type}")
    # Arrow's thread pool pays off for large frames only; a small one converts ~25% faster
    # without it (it is what a follower decodes on the way to its widget).
    threads = table.nbytes >= THREADED_DECODE_BYTES
    if not threads and not extra and plain(table, meta):
        return _plain_frame(table)
    df: pd.DataFrame = table.to_pandas(use_threads=threads)
    _restore_object_strings(table, df, meta, skip=json_columns)
    for i in sorted(json_columns):
        decoded = [_DECODE(t) for t in df.iloc[:, i].tolist()]
        df.isetitem(i, pd.Series(decoded, index=df.index, dtype=object, copy=False))
    if "names" in extra:
        df.columns = pd.Index(extra["names"], dtype=extra["names_dtype"],
                              name=extra["names_name"])
    return df


#: numpy dtypes that Arrow gives back as they were without pandas' metadata (the integer
#: and boolean ones only when the column has no nulls; pandas would not have made them).
_PLAIN_DTYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                           "uint64", "float32", "float64", "bool"})


def plain(table: pa.Table, meta: Mapping[str, Any]) -> bool:
    """Whether ``table`` holds a frame that reads back identical without its pandas
    metadata: default RangeIndex, no ``attrs``, column labels of the default dtype, each
    a distinct name, over columns of plain numpy dtypes (a KPI or aggregate query)."""
    columns = meta.get("columns")
    if (not columns or len(columns) != table.num_columns or meta.get("attributes")
            or meta.get("index_columns") != [{"kind": "range", "name": None, "start": 0,
                                               "stop": table.num_rows, "step": 1}]
            or meta.get("column_indexes") != [_default_labels()]):
        return False
    for col, name, array in zip(columns, table.column_names, table.columns, strict=True):
        kind = col.get("numpy_type")
        if (col.get("name") != name or col.get("field_name") != name
                or col.get("pandas_type") != kind or kind not in _PLAIN_DTYPES
                or col.get("metadata") is not None
                or (array.null_count and not kind.startswith("float"))):
            return False
    return len(set(table.column_names)) == int(table.num_columns)


def _plain_frame(table: pa.Table) -> pd.DataFrame:
    """A :func:`plain` table as a frame, one block per column, its column labels copied
    from a cached Index: ~5x faster than ``to_pandas`` on a small frame, where building
    the labels' Index of strings is half the cost (pandas 3) and the metadata the rest."""
    import importlib

    import numpy as np
    import pandas as pd

    try:  # public since pandas 3 (no stubs yet)
        from_blocks: Any = importlib.import_module(
            "pandas.api.internals").create_dataframe_from_blocks
    except (ImportError, AttributeError):  # pandas 2: no metadata, still a third faster
        frame: pd.DataFrame = table.to_pandas(use_threads=False, ignore_metadata=True)
        return frame

    blocks = [(np.array(column.to_numpy(), copy=True).reshape(1, -1), np.array([i]))
              for i, column in enumerate(table.columns)]  # copies: writable, as to_pandas
    labels = _labels(tuple(table.column_names)).copy()  # a user may rename a copy only
    made: pd.DataFrame = from_blocks(
        blocks, index=pd.RangeIndex(table.num_rows), columns=labels)
    return made


@functools.lru_cache(maxsize=1024)
def _labels(names: tuple[str, ...]) -> pd.Index:
    import pandas as pd

    labels: pd.Index = pd.Index(names)
    return labels


@functools.cache
def _default_labels() -> dict[str, Any]:
    """The ``column_indexes`` entry pyarrow writes for a frame's default column labels."""
    import pandas as pd
    import pyarrow as pa

    meta = pa.Table.from_pandas(pd.DataFrame({"a": [0]})).schema.pandas_metadata
    labels: dict[str, Any] = meta["column_indexes"][0]
    return labels


def _restore_object_strings(table: pa.Table, df: pd.DataFrame, meta: Mapping[str, Any],
                            skip: Collection[int] = ()) -> None:
    """Give back ``object`` dtype to string columns, index levels and column labels that
    had it.

    With pandas' default string dtype (pandas 3, or ``future.infer_string``), pyarrow
    turns every Arrow string column into ``str``, even when the pandas metadata says
    the column was ``object``. Rebuild those from Arrow (nulls become None); columns at
    the positions in ``skip`` are left alone.
    """
    import numpy as np
    import pandas as pd

    index_fields = [c for c in meta.get("index_columns", []) if isinstance(c, str)]

    def was_object_str(col: Mapping[str, Any]) -> bool:
        return bool(col.get("pandas_type") == "unicode" and col.get("numpy_type") == "object")

    def as_objects(field_name: str) -> Any:
        return table.column(field_name).to_numpy(zero_copy_only=False).astype(object)

    columns = [c for c in meta.get("columns", []) if c.get("field_name") not in index_fields]
    if len(columns) == df.shape[1]:
        for i, col in enumerate(columns):
            if i not in skip and was_object_str(col) and df.dtypes.iloc[i] != np.dtype(object):
                # A Series, not an array: pandas 3 would infer "str" again from an array.
                df.isetitem(i, pd.Series(as_objects(col["field_name"]), index=df.index,
                                         dtype=object, copy=False))

    labels = meta.get("column_indexes", [])
    if (len(labels) == 1 == df.columns.nlevels and was_object_str(labels[0])
            and df.columns.dtype != np.dtype(object)):
        df.columns = df.columns.astype(object)

    by_field = {c.get("field_name"): c for c in meta.get("columns", [])}
    if len(index_fields) != df.index.nlevels or not any(
        was_object_str(by_field.get(f, {})) for f in index_fields
    ):
        return
    levels = []
    for level, name in enumerate(index_fields):
        values = df.index.get_level_values(level)
        if was_object_str(by_field.get(name, {})) and values.dtype != np.dtype(object):
            values = pd.Index(as_objects(name), dtype=object, name=values.name)
        levels.append(values)
    if df.index.nlevels == 1:
        df.index = levels[0]
    else:
        df.index = pd.MultiIndex.from_arrays(levels, names=df.index.names)
