"""One run per result across processes: a miss on a shared cache leads or follows.

The first process to claim the lease of (tenant, key, definition, versions) runs the
handler; the others block until it announces its outcome, then serve its entry under the
usual freshness rule (recorded versions equal the counters read with it), so a follower
never serves an entry older than the change that woke it, nor one that a write announced
before its leader finished has made stale. A small entry arrives with the announcement,
its counters read in the same step (``stores.lease.Announcement``): the follower serves it
as soon as it wakes, with no round trip; a larger one is read back from the cache. A
follower waits for one leader at most its lease time plus one run (the leader's expected
time), and follows at most ``FOLLOW_ROUNDS`` leaders (a dead leader's lease lapses and
another process takes over; a failed run deletes its lease and wakes the followers at
once); then it runs the handler itself. A leader runs exactly this result (the versions
are part of the lease), so a visible live query never waits behind other work: at most
one run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from reactive_nb.live.freshness import Snapshot, recorded, scopes

if TYPE_CHECKING:
    from reactive_nb.live.results import Fetched, FunctionStats
    from reactive_nb.stores.health import StoreHealth
    from reactive_nb.stores.lease import Announcement, Claim, RedisLeases


class Shared(Protocol):
    """What sharing needs of a reactive function."""

    fingerprint: int
    stats: FunctionStats

    @property
    def watched(self) -> frozenset[str]: ...
    def read_versions(self, tenant: str) -> Snapshot | None: ...
    def lookup(self, tenant: str, key: str,
               before: Snapshot | None = None) -> Fetched | None: ...
    def accept(self, tenant: str, announced: Announcement) -> Fetched | None: ...
    def run_and_store(self, tenant: str, inputs: Mapping[str, Any], key: str,
                      before: Snapshot | None) -> Fetched: ...


def fetch_shared(fn: Shared, leases: RedisLeases, health: StoreHealth, tenant: str,
                 inputs: Mapping[str, Any], key: str,
                 first: Snapshot | None = None) -> Fetched | None:
    """A miss with a shared cache: lead the run of these versions, or follow its leader
    (see the module). ``first``: the counters the miss was found with (the first round
    claims for those; later rounds read them again). None: Redis failed meanwhile, the
    caller runs unshared."""
    from reactive_nb.stores.lease import FOLLOW_ROUNDS, MARGIN_MS

    rounds, seen, round_end, done_before = 0, b"", 0.0, ""
    read = scopes(tenant)
    while True:
        before, first = first or fn.read_versions(tenant), None
        if before is None:
            return None
        try:
            claim = leases.claim(tenant, key, fn.fingerprint,
                                 recorded(before, tenant, fn.watched), fn.stats.expected_ms(),
                                 read)
        except health.errors as exc:
            health.failed(exc)
            return None
        if claim.ours:
            return _lead(fn, leases, health, claim, tenant, inputs, key, before)
        if claim.done:  # the run of these very versions finished: serve its entry
            found = _announced(fn, tenant, claim.announcement) or fn.lookup(tenant, key)
            if found is not None:
                return _followed(fn, found)
            # None fresh: a write came after our read (read the versions again), or the
            # run left none (too large to cache, expired): then run it here.
            rounds += 1
            if claim.lease == done_before or rounds > FOLLOW_ROUNDS:
                return _run_anyway(fn, tenant, inputs, key, before)
            done_before = claim.lease
            continue
        now = time.monotonic()
        if claim.holder != seen:  # a new leader: a new round
            rounds += 1
            seen = claim.holder or b""
            # its lease time (what is left of it, at least a full one) plus one run
            lease_ms = max(claim.ttl_ms + MARGIN_MS, leases.lease_ms)
            round_end = now + (lease_ms + claim.expected_ms) / 1000
        if rounds > FOLLOW_ROUNDS or now >= round_end:
            return _run_anyway(fn, tenant, inputs, key, before)
        try:  # until it announces, or its lease may have lapsed (then claim again)
            announced = leases.wait(tenant, key, claim.mark,
                                    min((claim.ttl_ms + MARGIN_MS) / 1000, round_end - now))
        except health.errors as exc:
            health.failed(exc)
            return None
        found = _announced(fn, tenant, announced) or fn.lookup(tenant, key)
        if found is not None:
            return _followed(fn, found)


def _announced(fn: Shared, tenant: str, announced: Announcement | None) -> Fetched | None:
    """The copy of the entry an announcement carries, when fresh (no round trip)."""
    return fn.accept(tenant, announced) if announced is not None else None


def _lead(fn: Shared, leases: RedisLeases, health: StoreHealth, claim: Claim, tenant: str,
          inputs: Mapping[str, Any], key: str, before: Snapshot) -> Fetched:
    """Run holding the lease, store, then release and announce (also on failure: a failed
    run writes no entry and its followers take over at once)."""
    with fn.stats.lock:
        fn.stats.led += 1
    try:
        fetched = fn.run_and_store(tenant, inputs, key, before)
    except BaseException:
        _release(leases, health, claim, key, ran=False)
        raise
    _release(leases, health, claim, key, ran=True)
    return fetched


def _release(leases: RedisLeases, health: StoreHealth, claim: Claim, key: str,
             ran: bool) -> None:
    try:
        leases.release(claim, key, ran)
    except health.errors as exc:  # the lease lapses by itself
        health.failed(exc)


def _run_anyway(fn: Shared, tenant: str, inputs: Mapping[str, Any], key: str,
                before: Snapshot) -> Fetched:
    with fn.stats.lock:
        fn.stats.ran_anyway += 1
    return fn.run_and_store(tenant, inputs, key, before)


def _followed(fn: Shared, fetched: Fetched) -> Fetched:
    with fn.stats.lock:
        fn.stats.followed += 1
    return fetched
