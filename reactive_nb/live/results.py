"""What a reactive function answers (``Fetched``, ``Peeked``) and counts (``FunctionStats``)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class FunctionStats:
    """Counters of one function; ``lock`` guards them (held for a few additions only)."""

    hits: int = 0
    misses: int = 0
    runs: int = 0
    errors: int = 0
    #: Runs made holding the lease, for every process sharing the cache (Redis).
    led: int = 0
    #: Misses served by another process's run, after waiting for it.
    followed: int = 0
    #: Runs made without the lease after following gave up (see ``live.sharing``).
    ran_anyway: int = 0
    last_ms: float | None = None
    total_ms: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def expected_ms(self) -> int:
        """The mean run time here (0: never ran), announced to followers."""
        with self.lock:
            return int(self.total_ms / self.runs) if self.runs else 0

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            looked = self.hits + self.misses
            return {
                "hits": self.hits, "misses": self.misses, "runs": self.runs,
                "errors": self.errors, "hit_rate": self.hits / looked if looked else 0.0,
                "led": self.led, "followed": self.followed, "ran_anyway": self.ran_anyway,
                "last_ms": self.last_ms,
                "mean_ms": self.total_ms / self.runs if self.runs else None,
            }


@dataclass(frozen=True)
class Fetched:
    """One answer of a function: the frame, whether it came from the cache, and its versions."""

    df: pd.DataFrame
    hit: bool
    versions: Mapping[str, int]
    #: Seconds since the frame was computed (0 for a run): a TTL counts from then.
    age: float = 0.0


@dataclass(frozen=True)
class Peeked:
    """A cached frame as a new live query first shows it."""

    df: pd.DataFrame
    fresh: bool
    created_at: float  # ``time.time()`` seconds, for "updated at"
    age: float  # seconds since it was computed, for the TTL


def summary(stats: Mapping[str, FunctionStats]) -> dict[str, Any]:
    """Cache hits, misses and hit rate over every function, and each one's counters."""
    per = {name: counters.as_dict() for name, counters in stats.items()}
    hits = sum(s["hits"] for s in per.values())
    misses = sum(s["misses"] for s in per.values())
    looked = hits + misses
    return {"hits": hits, "misses": misses, "hit_rate": hits / looked if looked else 0.0,
            "functions": per}
