"""Change fan-out: to this process's subscribers, and to every process following a tenant.

A :class:`~reactive_nb.events.Change` published on a bus reaches this process's subscribers
at once, synchronously, in the publishing thread. :class:`RedisBus` also appends it to one
Redis Stream per tenant, which other processes read with a blocking ``XREAD``. Both
implementations share the :class:`Bus` interface and one test suite.

The modules: ``base`` (the :class:`Bus` protocol and the subscriber list), ``memory``
(:class:`MemoryBus`), ``redis`` (:class:`RedisBus` and its delivery guarantees), and the
Redis bus's helpers: ``entries`` (the stream layout and entry fields), ``cursor`` (where
the reader stands in a stream, and gap detection), ``read`` (one atomic read of the
streams of one hash slot), ``cluster`` (one reader thread per master of a Redis Cluster),
``outbox`` (sent ids, changes held during an outage, back-off) and ``client`` (its own
connection pool). Every module logs to ``reactive_nb.stores.bus``.
"""

from __future__ import annotations

from reactive_nb.stores.bus.base import Bus, Callback
from reactive_nb.stores.bus.memory import MemoryBus
from reactive_nb.stores.bus.redis import RedisBus

__all__ = ["Bus", "Callback", "MemoryBus", "RedisBus"]
