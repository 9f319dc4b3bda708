"""Where the Redis bus reader stands in one stream, and how it notices lost entries.

Pure functions of ``XINFO STREAM`` replies and entry ids: no connection, no thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

READ_COUNT = 1000  # entries per stream per read: bounds the memory of one read


@dataclass(frozen=True)
class Cursor:
    """Where the reader stands in one followed stream.

    ``last_id``: the last entry id consumed, or the stream's last id when it was followed;
    None when follow() could not reach Redis (the reader starts it later and reports a gap).
    ``added``: the stream's ``entries-added`` counter (Redis >= 7) up to ``last_id``. Entries
    leave a stream from its head, so ``entries-added - length`` entries were trimmed; more
    than ``added`` means some we never read were dropped. None when the server lacks it.
    """

    last_id: str | None
    added: int | None


START = Cursor("0-0", 0)


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def as_text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cursor_at_end(info: Mapping[str, Any]) -> Cursor:
    added = info.get("entries-added")
    return Cursor(as_text(info["last-generated-id"]), int(added) if added is not None else None)


def advance(
    cursor: Cursor, info: Mapping[str, Any] | None, ids: list[str]
) -> tuple[Cursor, bool, bool]:
    """The cursor after reading entries ``ids`` of a stream, given ``XINFO STREAM`` taken in
    the same transaction (None: the stream does not exist).

    Returns ``(cursor, gap, reread)``: ``gap`` when entries we never read were lost,
    ``reread`` when the stream must be read again from the new cursor (``ids`` ignored).
    """
    if info is None:
        # Vanished (deleted, or Redis restarted empty) after we had read from it: whatever
        # was published since our last read is lost.
        return START, cursor.last_id not in (None, "0-0"), False
    if cursor.last_id is None:
        return cursor_at_end(info), True, False
    last_generated = as_text(info["last-generated-id"])
    added = info.get("entries-added")
    if _stream_id(last_generated) < _stream_id(cursor.last_id) or (
        added is not None and cursor.added is not None and added < cursor.added
    ):
        # A new stream under the old key: read it from its start.
        return START, True, True
    first = info.get("first-entry")
    if added is not None and cursor.added is not None:
        trimmed = int(added) - int(info["length"])
        gap = trimmed > cursor.added
        new_added: int | None = max(cursor.added, trimmed) + len(ids)
    else:
        # Redis < 7 has no entries-added: a first entry past ours means some were trimmed
        # (it may also be only ours: a spurious gap costs a re-check, a missed one staleness).
        gap = (first is not None and cursor.last_id != "0-0"
               and _stream_id(as_text(first[0])) > _stream_id(cursor.last_id))
        new_added = None
    return Cursor(ids[-1] if ids else cursor.last_id, new_added), gap, len(ids) >= READ_COUNT


def missing_stream(exc: BaseException) -> bool:
    """Whether a Redis error says the key does not exist (XINFO STREAM on a missing key)."""
    return "no such key" in str(exc).lower()
