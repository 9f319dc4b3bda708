"""Frame -> page logic of the live table: column kinds, cached sort orders, page slices,
JSON-safe cell formatting and the row diff that drives "changed rows" highlighting.

Pure functions over pandas objects, apart from the widget so they are tested without a
kernel, and so their cost is easy to see: formatting only ever touches one page, sorting
is done once per (frame, sort) by the caller, and the diff is bounded by
`DIFF_MAX_ROWS`. (Only reached lazily, through `reactive_nb.ui.widgets`, so pandas and
numpy are imported at module level.)
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Hashable, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from reactive_nb.ui.widgets.messages import Cell, Column

Positions: TypeAlias = "npt.NDArray[np.intp] | slice"
"""Rows of a page as frame positions: a slice when unsorted, an array when sorted."""

MAX_TEXT = 300
"""Text longer than this is cut (with "…") before it is sent: the browser truncates
visually with an ellipsis and shows the sent text on hover. Keeps a page of wide text
columns small."""

MAX_PAGE_ROWS = 1_000
"""Upper bound on the rows of one page request, whatever the browser asks."""

DIFF_MAX_ROWS = 200_000
"""Frames of this many rows or more are not diffed: no highlighting, no O(n) work on
every refresh of a very large result."""

_JS_SAFE_INT = 2**53


WIDTH_SAMPLE = 200
"""Rows (evenly spaced, first and last included) formatted to size the columns."""


def column_kinds(df: pd.DataFrame) -> list[Column]:
    """Header description: the name (as text), a display kind and the widest text of
    every column.

    The kind (`number`, `bool`, `datetime`, `text`, `other`) only drives alignment and
    styling in the browser; `widest` (the longest of the name and the formatted values
    of `WIDTH_SAMPLE` sampled rows, at most 60 characters) lets the browser size the
    column once, so it does not jump while scrolling. Cost: one small page of formatting.
    """
    n = len(df)
    sample = np.unique(np.linspace(0, n - 1, num=min(n, WIDTH_SAMPLE)).astype(np.intp))
    rows = format_page(df, sample) if n else []
    out: list[Column] = []
    for j, name in enumerate(df.columns):
        dtype = df.dtypes.iloc[j]
        if pd.api.types.is_bool_dtype(dtype):
            kind = "bool"
        elif pd.api.types.is_numeric_dtype(dtype):
            kind = "number"
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            kind = "datetime"
        elif pd.api.types.is_string_dtype(dtype):
            kind = "text"
        else:
            kind = "other"
        texts = [str(name)] + [display_text(row[j]) for row in rows]
        out.append({"name": str(name), "kind": kind, "widest": max(texts, key=len)[:60]})
    return out


def display_text(cell: Cell) -> str:
    """How the browser displays a formatted cell (floats with 8 significant digits)."""
    if cell is None:
        return "null"
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, float):
        return format(cell, ".8g")
    return str(cell)


def column_position(df: pd.DataFrame, name: str) -> int | None:
    """Position of the first column whose text name is `name` (None if there is none)."""
    for j, col in enumerate(df.columns):
        if str(col) == name:
            return j
    return None


def sort_order(df: pd.DataFrame, column: int, ascending: bool) -> npt.NDArray[np.intp]:
    """Frame positions in the order of column `column` (stable, nulls last).

    O(n log n): callers cache the result per (frame, sort) instead of sorting per page.
    Columns whose values do not compare with each other (mixed types) sort as text.
    """
    values = df.iloc[:, column].reset_index(drop=True)
    try:
        ordered = values.sort_values(ascending=ascending, kind="stable", na_position="last")
    except TypeError:
        text = values.map(lambda v: None if _is_null(v) else str(v))
        ordered = text.sort_values(ascending=ascending, kind="stable", na_position="last")
    return np.asarray(ordered.index, dtype=np.intp)


def search_mask(df: pd.DataFrame, query: str) -> npt.NDArray[np.bool_]:
    """Rows of `df` where some cell's text contains `query`, ignoring case.

    The whole frame is searched (not only the rows the browser has seen): one vectorised
    substring test per column, O(rows x columns); callers cache the mask per
    (frame, query). Nulls match nothing; numbers match their text (``42``, ``0.5``).
    """
    mask = np.zeros(len(df), dtype=np.bool_)
    if not query:
        mask[:] = True
        return mask
    needle = query.casefold()
    for j in range(df.shape[1]):
        column = df.iloc[:, j]
        try:
            text = column.astype("string")
        except (TypeError, ValueError):  # objects without a text form pandas accepts
            text = column.map(lambda v: None if _is_null(v) else str(v)).astype("string")
        found = text.str.casefold().str.contains(needle, regex=False)
        mask |= found.fillna(False).to_numpy(dtype=np.bool_)
    return mask


def page_positions(
    total: int, order: npt.NDArray[np.intp] | None, start: int, count: int
) -> tuple[int, Positions]:
    """Clamp a requested window to the frame and return (start, positions of its rows)."""
    start = max(0, min(int(start), total))
    count = max(0, min(int(count), MAX_PAGE_ROWS, total - start))
    if order is None:
        return start, slice(start, start + count)
    return start, order[start : start + count]


def format_page(df: pd.DataFrame, positions: Positions) -> list[list[Cell]]:
    """The rows at `positions`, each a list of JSON-safe cells (only the slice is touched)."""
    part = df.iloc[positions]
    columns = [[format_cell(v) for v in part.iloc[:, j].tolist()] for j in range(part.shape[1])]
    return (
        [list(row) for row in zip(*columns, strict=True)]
        if columns
        else [[] for _ in range(len(part))]
    )


def format_cell(value: Any) -> Cell:
    """One value as the browser shows it.

    Nulls (None, NaN, NaT, NA) -> None; dates and times -> ISO 8601; decimals -> their
    exact text; integers beyond 2**53 -> text (JavaScript numbers would round them);
    infinities -> "inf"/"-inf"; bytes -> a hex preview; anything else -> its text,
    cut to `MAX_TEXT` characters.
    """
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        number = int(value)
        return number if abs(number) < _JS_SAFE_INT else str(number)
    if isinstance(value, float | np.floating):
        real = float(value)
        if math.isnan(real):
            return None
        if math.isinf(real):
            return "inf" if real > 0 else "-inf"
        return real
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, decimal.Decimal):
        return None if value.is_nan() else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, np.datetime64):
        stamp = pd.Timestamp(value)
        return None if stamp is pd.NaT else stamp.isoformat()
    if isinstance(value, pd.Timedelta | dt.timedelta | np.timedelta64):
        delta = pd.Timedelta(value)
        return None if delta is pd.NaT else str(delta)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return _cut("0x" + raw[: MAX_TEXT // 2].hex())
    if _is_null(value):
        return None
    return _cut(str(value))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _is_null(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays, lists: not a scalar null
        return False


def changed_rows(
    old: pd.DataFrame | None, new: pd.DataFrame, primary_key: Sequence[str] | None
) -> npt.NDArray[np.bool_] | None:
    """Which rows of `new` are new or changed since `old`, as a mask over `new`'s rows.

    - With a primary key (all its columns in both frames): a row is changed when its key
      is new or the values of the shared columns differ.
    - Without one, a meaningful (non-default) index is the key.
    - With the default RangeIndex, a row is changed when its content does not occur in
      `old`: positions are not identities (one row inserted on top of an
      `ORDER BY created_at DESC` result shifts every position), contents are.
    Returns None (highlight nothing) for the first frame, when either frame has
    `DIFF_MAX_ROWS` rows or more, or when values cannot be hashed (lists, dicts).
    Cost: vectorised hashing, about O(n) for both frames.
    """
    if old is None or len(old) >= DIFF_MAX_ROWS or len(new) >= DIFF_MAX_ROWS:
        return None
    if old is new:
        return np.zeros(len(new), dtype=np.bool_)
    old_names = set(old.columns)
    shared = list(dict.fromkeys(c for c in new.columns if c in old_names))
    try:
        h_new = _row_hashes(new, shared)
        h_old = _row_hashes(old, shared)
        key = [k for k in primary_key or () if k in old_names and k in set(new.columns)]
        if primary_key and len(key) == len(primary_key):
            return _diff_by_keys(_row_hashes(old, key), h_old, _row_hashes(new, key), h_new)
        if not (_default_index(old) and _default_index(new)):
            return _diff_by_keys(_index_hashes(old), h_old, _index_hashes(new), h_new)
        return np.asarray(~np.isin(h_new, h_old), dtype=np.bool_)
    except (TypeError, ValueError):
        return None


def _row_hashes(df: pd.DataFrame, columns: Sequence[Hashable]) -> npt.NDArray[np.uint64]:
    if not columns:
        return np.zeros(len(df), dtype=np.uint64)
    part = df.loc[:, list(columns)]
    return np.asarray(pd.util.hash_pandas_object(part, index=False), dtype=np.uint64)


def _index_hashes(df: pd.DataFrame) -> npt.NDArray[np.uint64]:
    labels = df.index.to_frame(index=False)
    return np.asarray(pd.util.hash_pandas_object(labels, index=False), dtype=np.uint64)


def _default_index(df: pd.DataFrame) -> bool:
    index = df.index
    return (
        isinstance(index, pd.RangeIndex)
        and index.start == 0
        and index.step == 1
        and index.name is None
    )


def _diff_by_keys(
    k_old: npt.NDArray[np.uint64],
    h_old: npt.NDArray[np.uint64],
    k_new: npt.NDArray[np.uint64],
    h_new: npt.NDArray[np.uint64],
) -> npt.NDArray[np.bool_]:
    old_keys = pd.Index(k_old)
    if not old_keys.is_unique:  # duplicated keys: compare with the first occurrence
        first = ~old_keys.duplicated()
        old_keys, h_old = old_keys[first], h_old[first]
    where = np.asarray(old_keys.get_indexer(pd.Index(k_new)), dtype=np.intp)
    changed = where < 0
    found = ~changed
    changed[found] = h_old[where[found]] != h_new[found]
    return np.asarray(changed, dtype=np.bool_)
