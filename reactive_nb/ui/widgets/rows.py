"""The rows a live table shows: its current frame, the orderings of that frame the
browser asked for, the rows the last refresh changed, and the `rows` windows cut from
them. No widget here: a `LiveTable` holds one `TableRows` and sends what it cuts.

Sorting a million rows or searching every cell is the expensive part of a page request,
so each (sort, search) ordering is computed at most once per frame and the last
`VIEW_CACHE` are kept; a search in a sort order starts from the cached sort. A new frame
drops them all. Page requests may come from the kernel's main thread or a subshell
thread while the flush thread replaces the frame.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from reactive_nb.ui.widgets import paging
from reactive_nb.ui.widgets.messages import Cell, RowsMessage

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pandas as pd

SortKey: TypeAlias = "tuple[str, bool] | None"
"""(column, ascending) of a sort order; None: the frame's own order."""

_ViewKey: TypeAlias = "tuple[SortKey, str]"
"""(sort, search) of a cached ordering of the current frame."""

VIEW_CACHE = 8
"""(sort, search) orderings kept per frame: a few searches typed in a row stay cached."""
HIGHLIGHT_SECONDS = 1.5
"""How long changed rows stay highlighted after a refresh."""


def sort_key(sort: Sequence[Any] | None) -> SortKey:
    """A sort order as the `sort` trait or a page request gives it (``[]`` or
    ``[column, ascending]``), as a key; None for none or a malformed one."""
    if not sort or len(sort) < 1 or not isinstance(sort[0], str):
        return None
    ascending = bool(sort[1]) if len(sort) > 1 else True
    return (sort[0], ascending)


class TableRows:
    """The frame shown, numbered by `version`, and what is derived from it. `replace`
    is called by one thread at a time (the table's one writer); `page` by any."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        # Guards the frame and the fields derived from it below. Held for field
        # reads/writes only: never while sorting, diffing or formatting.
        self._lock = threading.Lock()
        # Serialises computing an ordering, so two requests do not sort 1M rows twice.
        self._sort_lock = threading.Lock()
        self._frame: pd.DataFrame | None = None
        self._version = 0
        # Orderings of `_frame` by (sort, search): positions of the rows shown, in order.
        self._orders: dict[_ViewKey, npt.NDArray[np.intp]] = {}
        self._changed: npt.NDArray[np.bool_] | None = None
        self._changed_at = 0.0

    @property
    def frame(self) -> pd.DataFrame | None:
        with self._lock:
            return self._frame

    def replace(self, df: pd.DataFrame | None, key: Sequence[str] | None) -> int:
        """Show `df` from now on: mark the rows that differ from the previous frame (by
        the primary-key columns `key`, if any), drop the orderings; the new version."""
        previous = self.frame
        changed = None if df is None else paging.changed_rows(previous, df, key)
        with self._lock:
            self._frame = df
            self._version += 1
            self._orders = {}
            self._changed, self._changed_at = changed, self._clock()
            return self._version

    def page(self, start: int, count: int, key: SortKey, search: str) -> RowsMessage:
        """The `rows` payload for the window [start, start+count) of the rows matching
        `search` in `key` order. Sorts and searches at most once per (frame, sort,
        search); formats only the window."""
        with self._lock:
            frame, version = self._frame, self._version
            changed, changed_at = self._changed, self._changed_at
        if frame is None:
            return _rows_message(version, key, search, 0, [], [], 0.0, 0)
        order = self._ordering(frame, key, search)
        total = len(frame) if order is None else len(order)
        start, positions = paging.page_positions(total, order, start, count)
        rows = paging.format_page(frame, positions)
        marks, age = self._marks(changed, changed_at, positions)
        return _rows_message(version, key, search, start, rows, marks, age, total)

    def _ordering(
        self, frame: pd.DataFrame, key: SortKey, search: str = ""
    ) -> npt.NDArray[np.intp] | None:
        """Positions of the rows of `frame` matching `search`, in `key` order
        (None: every row, in frame order), cached per (frame, sort, search)."""
        import numpy as np

        column = None if key is None else paging.column_position(frame, key[0])
        if column is None:
            key = None
        if key is None and not search:
            return None
        with self._sort_lock:
            view = self._cached(frame, (key, search))
            if view is not None:
                return view
            if key is None:
                order = None
            else:
                order = self._cached(frame, (key, ""))
                if order is None:
                    assert column is not None
                    order = paging.sort_order(frame, column, key[1])
                    self._keep(frame, (key, ""), order)
            if search:
                mask = paging.search_mask(frame, search)
                order = np.flatnonzero(mask) if order is None else order[mask[order]]
                self._keep(frame, (key, search), order)
        return order

    def _cached(self, frame: pd.DataFrame, key: _ViewKey) -> npt.NDArray[np.intp] | None:
        with self._lock:
            return self._orders.get(key) if self._frame is frame else None

    def _keep(self, frame: pd.DataFrame, key: _ViewKey, order: npt.NDArray[np.intp]) -> None:
        with self._lock:
            if self._frame is not frame:
                return
            self._orders[key] = order
            while len(self._orders) > VIEW_CACHE:  # the oldest first (dicts keep order)
                del self._orders[next(iter(self._orders))]

    def _marks(
        self,
        changed: npt.NDArray[np.bool_] | None,
        changed_at: float,
        positions: paging.Positions,
    ) -> tuple[list[int], float]:
        """Indices within the page of rows changed by the last refresh, and its age (ms)."""
        age = self._clock() - changed_at
        if changed is None or age > HIGHLIGHT_SECONDS:
            return [], 0.0
        flags = changed[positions]
        return [int(i) for i in flags.nonzero()[0]], round(age * 1000.0, 1)


def _rows_message(
    version: int,
    key: SortKey,
    search: str,
    start: int,
    rows: list[list[Cell]],
    changed: list[int],
    age_ms: float,
    total: int,
) -> RowsMessage:
    return {
        "type": "rows",
        "version": version,
        "sort": [] if key is None else [key[0], key[1]],
        "search": search,
        "start": start,
        "rows": rows,
        "changed": changed,
        "changed_age_ms": age_ms,
        "total": total,
    }
