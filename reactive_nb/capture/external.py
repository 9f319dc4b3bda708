"""The event external capture sources produce: tables written by another client.

PostgreSQL notifications and the SQLite poller both report what they saw as an
``ExternalChange``; the database layer turns it into version bumps and ``Change`` events.
Keeping it separate from ``Change`` keeps the sources free of tenant/origin policy.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from reactive_nb.events import ALL_TABLES


@dataclass(frozen=True)
class ExternalChange:
    """Tables written (and committed) by some client, as seen by a capture source.

    ``tables`` uses reactive_nb's names: ``"agent"``, or ``"schema.table"`` outside the
    default schema (``public`` / ``main``); ``"*"`` means every table. ``tenants`` holds
    the distinct tenant values of the changed rows, or None when unknown (= all
    tenants). ``txid`` identifies the writing transaction (PostgreSQL txid, else a
    unique id) so several listening processes can bump versions once. ``lost`` is True
    when notifications may have been lost: treat every watched table as changed.
    """

    tables: frozenset[str]
    tenants: frozenset[str] | None
    txid: str
    lost: bool = False

    @property
    def all_tables(self) -> bool:
        """True when the change may have touched every table."""
        return self.lost or ALL_TABLES in self.tables

    @classmethod
    def everything_lost(cls) -> ExternalChange:
        """The event a source emits after it may have missed notifications."""
        return cls(frozenset({ALL_TABLES}), None, uuid.uuid4().hex, lost=True)
