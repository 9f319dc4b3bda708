"""The live table's custom messages between Python and the browser, one type per kind.

Browser -> Python (sent by `table.js` with `model.send`):

- `PageRequest` ``{"type": "page", "start", "count", "seq", "sort", "search"}``: the rows
  of a window, in a sort order (``sort`` absent or null: the `sort` trait's order), among
  the rows matching a search (``search`` absent: the search applied last).
- `SearchRequest` ``{"type": "search", "query"}``: filter the table to the rows of the
  whole frame where some cell contains ``query`` (case-insensitive; "" shows every row).
  Sent debounced while the user types; the flush thread pushes the result (the `search`
  and `matched_rows` traits and a first `window`).
- `Heartbeat` ``{"type": "heartbeat"}``: every 10 s while a view exists, it keeps the
  visibility report alive.

Python -> browser (`LiveTable._send_message`):

- `RowsReply` ``{"type": "rows", ...}``: the answer to one `PageRequest`, which echoes its
  ``seq``. The same payload without ``seq`` (`RowsMessage`) is the synced `window` trait.

Sorting and visibility are not messages: the browser sets the synced `sort` and `visible`
traits, which traitlets validates. Resizing never leaves the browser.

`parse_browser_message` turns what the comm delivered into one of the typed messages, or
None (logged at debug) for an unknown kind or a malformed field: a bad message from a
stale or foreign front end is dropped, it never raises in the comm handler.
"""

from __future__ import annotations

import logging
import math
from typing import Literal, TypeAlias, TypedDict

logger = logging.getLogger(__name__)

Cell: TypeAlias = "str | int | float | bool | None"
"""A JSON-safe cell value as sent to the browser (None renders as a dim "null")."""

Sort: TypeAlias = "list[str | bool]"
"""A sort order on the wire: ``[]`` (frame order) or ``[column name, ascending]``."""


class Column(TypedDict):
    """One header entry of the synced `columns` trait."""

    name: str
    kind: str  # number, bool, datetime, text or other: alignment and styling only
    widest: str  # the widest sampled text (<= 60 characters): sizes the column once


# ---- browser -> Python ------------------------------------------------------------------


class _PageRequestKind(TypedDict):
    type: Literal["page"]


class PageRequest(_PageRequestKind, total=False):
    """The rows of the window [start, start + count). `table.js` always sends every
    field; Python callers may leave them out (start 0, count one page, the `sort` trait)."""

    start: int
    count: int
    seq: int | None  # echoed in the reply: the browser matches replies to requests
    sort: Sort
    search: str


class SearchRequest(TypedDict):
    """Show only the rows where some cell's text contains ``query`` (case-insensitive)."""

    type: Literal["search"]
    query: str


class Heartbeat(TypedDict):
    """A view still exists (sent every 10 s): refreshes the visibility report's age."""

    type: Literal["heartbeat"]


BrowserMessage: TypeAlias = "PageRequest | SearchRequest | Heartbeat"

MAX_SEARCH = 200
"""Longest search text accepted (characters); a longer one is malformed."""


# ---- Python -> browser ------------------------------------------------------------------


class RowsMessage(TypedDict):
    """Rows of one window of a frame version; also the value of the `window` trait."""

    type: Literal["rows"]
    version: int  # the frame these rows come from (the `version` trait)
    sort: Sort  # the order they are in (as applied: an unknown column is [])
    search: str  # the search they match ("": every row)
    start: int  # position of the first row among the matching rows, clamped
    rows: list[list[Cell]]
    changed: list[int]  # indices within `rows` changed by the last refresh
    changed_age_ms: float  # age of that refresh, so the highlight fades in step
    total: int  # rows matching `search` (all the frame's rows when it is "")


class RowsReply(RowsMessage):
    """The reply to a `PageRequest`."""

    seq: int | None


PythonMessage: TypeAlias = "RowsReply"


# ---- parsing ----------------------------------------------------------------------------


class _Malformed(ValueError):
    pass


def parse_browser_message(content: object) -> BrowserMessage | None:
    """`content` as the typed message it is, or None (logged at debug) when its type is
    unknown or a field is malformed. Never raises."""
    try:
        if not isinstance(content, dict):
            raise _Malformed("not an object")
        kind = content.get("type")
        if kind == "page":
            return _page_request(content)
        if kind == "search":
            return SearchRequest(type="search", query=_search(content.get("query")))
        if kind == "heartbeat":
            return Heartbeat(type="heartbeat")
        raise _Malformed(f"unknown message type {kind!r}")
    except _Malformed as exc:
        logger.debug("live table: ignored browser message %.200r: %s", content, exc)
        return None


def _page_request(content: dict[object, object]) -> PageRequest:
    msg = PageRequest(type="page")
    if "start" in content:
        msg["start"] = _integer(content["start"], "start")
    if "count" in content:
        msg["count"] = _integer(content["count"], "count")
    if "seq" in content:
        seq = content["seq"]
        msg["seq"] = None if seq is None else _integer(seq, "seq")
    sort = content.get("sort")
    if sort is not None:  # absent or null: the sort trait applies
        msg["sort"] = _sort(sort)
    search = content.get("search")
    if search is not None:  # absent or null: the search applied last
        msg["search"] = _search(search)
    return msg


def _search(value: object) -> str:
    """A search text: a string of at most `MAX_SEARCH` characters, stripped."""
    if not isinstance(value, str) or len(value) > MAX_SEARCH:
        raise _Malformed(f"search is not a string of at most {MAX_SEARCH} characters")
    return value.strip()


def _integer(value: object, field: str) -> int:
    """A JSON number with an integral value (JavaScript numbers are floats)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Malformed(f"{field} is not a number")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise _Malformed(f"{field} is not an integer")
    return int(value)


def _sort(value: object) -> Sort:
    """``[]`` or ``[column, ascending]``. A missing ``ascending`` means ascending; a
    number is taken as a truth value (the `sort` trait may have been set from Python)."""
    if not isinstance(value, list) or len(value) > 2:
        raise _Malformed("sort is not [] or [column, ascending]")
    if not value:
        return []
    column = value[0]
    ascending = value[1] if len(value) > 1 else True
    if not isinstance(column, str) or not isinstance(ascending, int | float):
        raise _Malformed("sort is not [] or [column, ascending]")
    return [column, bool(ascending)]
