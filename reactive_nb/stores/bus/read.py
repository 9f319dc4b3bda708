"""One atomic read of followed streams that share a hash slot: their ``XINFO STREAM`` and
their new entries in one step, turned into new cursors, gaps and changes.

Talks to Redis once and returns; it holds no state of its own. The bus applies the result
(under its lock) and delivers the changes: :meth:`reactive_nb.stores.bus.redis.RedisBus._read`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reactive_nb.events import Change
from reactive_nb.stores.bus.cursor import (
    READ_COUNT,
    START,
    Cursor,
    advance,
    as_text,
    cursor_at_end,
    missing_stream,
)
from reactive_nb.stores.bus.entries import parse_entry, stream_key

__all__ = ["READ_LUA", "StreamRead", "read_slot", "stream_end", "xread_streams"]

# The cluster form of the reader's MULTI: XINFO and XREAD of streams of one slot, atomic.
# KEYS: the streams; ARGV[i]: the last id read of KEYS[i] ('' : do not read it);
# ARGV[#KEYS + 1]: entries per stream. Returns {XINFO reply or error, XREAD reply or false}
# per stream.
READ_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local info = redis.pcall('XINFO', 'STREAM', key)
  local read = false
  if ARGV[i] ~= '' then
    read = redis.call('XREAD', 'COUNT', ARGV[#KEYS + 1], 'STREAMS', key, ARGV[i])
  end
  out[i] = {info, read}
end
return out
"""


@dataclass(frozen=True)
class StreamRead:
    """What one read found in one tenant's stream: the ``cursor`` after it, whether
    entries never read were lost (``gap``), whether the stream must be read again from
    that cursor (``reread``; ``changes`` is then empty), and the changes of other origins.
    """

    tenant: str
    cursor: Cursor
    gap: bool
    reread: bool
    changes: list[Change]


def read_slot(client: Any, script: Any, prefix: str, origin: str,
              cursors: dict[str, Cursor]) -> list[StreamRead]:
    """Read the streams of these tenants (one hash slot), from their cursors, with their
    ``XINFO``, in one transaction (``script``: a :data:`READ_LUA` registered on a cluster
    client, routed by redis-py through MOVED and ASK, which a cluster MULTI is not while
    its slot migrates; None: a MULTI on one server). Entries of ``origin`` are dropped."""
    key = {t: stream_key(prefix, t) for t in cursors}
    streams: dict[Any, Any] = {key[t]: c.last_id for t, c in cursors.items() if c.last_id}
    entries: dict[str, list[tuple[Any, Any]]] = {}
    if script is not None:
        keys = list(key.values())
        reply: Any = script(keys=keys, args=[*(streams.get(k) or "" for k in keys),
                                             READ_COUNT])
        results = [info for info, _ in reply]
        for _, read in reply:
            entries.update(xread_streams(read))
    else:
        pipe = client.pipeline(transaction=True)
        for tenant in cursors:
            pipe.xinfo_stream(key[tenant])
        if streams:
            pipe.xread(streams, count=READ_COUNT)
        results = pipe.execute(raise_on_error=False)
        if streams:
            last = results[-1]
            if isinstance(last, Exception):
                raise last
            entries = xread_streams(last)

    found = []
    for tenant, info in zip(cursors, results, strict=False):
        if isinstance(info, Exception):
            if not missing_stream(info):
                raise info
            info = None
        elif isinstance(info, list):  # a cluster transaction leaves XINFO unparsed
            info = {as_text(k): v for k, v in zip(info[::2], info[1::2], strict=False)}
        items = entries.get(key[tenant], [])
        cursor, gap, reread = advance(cursors[tenant], info, [as_text(i) for i, _ in items])
        changes = [] if reread else [
            c for c in (parse_entry(prefix, tenant, i, f) for i, f in items)
            if c is not None and c.origin != origin]
        found.append(StreamRead(tenant, cursor, gap, reread, changes))
    return found


def stream_end(client: Any, key: str) -> Cursor:
    """A cursor at the end of stream ``key`` (at its start when there is no such stream):
    where following it starts."""
    import redis

    try:
        info = client.xinfo_stream(key)
    except redis.ResponseError as exc:
        if missing_stream(exc):
            return START
        raise
    return cursor_at_end(info)


def xread_streams(reply: Any) -> dict[str, list[tuple[Any, Any]]]:
    """An ``XREAD`` reply as {stream key: [(entry id, {field: value})]}, whichever shape
    redis-py gave it: a list of [key, entries] (RESP2, the parsed form) or a dict (a
    cluster transaction's reply, whose entries keep their fields as a flat list)."""
    pairs = reply.items() if isinstance(reply, dict) else (reply or ())
    streams: dict[str, list[tuple[Any, Any]]] = {}
    for key, items in pairs:
        entries = []
        for entry_id, fields in items or ():
            if isinstance(fields, list):
                fields = dict(zip(fields[::2], fields[1::2], strict=False))
            entries.append((entry_id, fields))
        streams[as_text(key)] = entries
    return streams
