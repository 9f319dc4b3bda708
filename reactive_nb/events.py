"""The change event: what every capture source produces and every bus carries."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field

#: A table name that stands for "every table of the database": used when a statement
#: cannot be parsed, or a listener lost notifications. It is also a version counter.
ALL_TABLES = "*"

#: The tenant used when none is set.
DEFAULT_TENANT = "default"

#: Identifies this process on a shared bus, so it can ignore the echo of its own changes.
PROCESS_ORIGIN = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def new_id() -> str:
    """A unique change id."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Change:
    """Tables of one tenant were written and the write is committed.

    ``origin`` names the process that captured it (``PROCESS_ORIGIN`` for ours, or
    e.g. ``"pg:<pid>"`` for a PostgreSQL notification); ``id`` is unique per change.
    """

    tenant: str
    tables: frozenset[str]
    origin: str = PROCESS_ORIGIN
    id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        if not isinstance(self.tables, frozenset):
            object.__setattr__(self, "tables", frozenset(self.tables))

    @property
    def all_tables(self) -> bool:
        """True when the change may have touched every table."""
        return ALL_TABLES in self.tables

    def to_json(self) -> str:
        return json.dumps(
            {"tenant": self.tenant, "tables": sorted(self.tables),
             "origin": self.origin, "id": self.id},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> Change:
        """Parse the JSON form; raises ValueError on anything malformed."""
        try:
            obj = json.loads(data)
            tenant, tables, origin, id_ = obj["tenant"], obj["tables"], obj["origin"], obj["id"]
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"malformed change event: {data!r:.200}") from exc
        if not (isinstance(tenant, str) and isinstance(tables, list)
                and all(isinstance(t, str) for t in tables)
                and isinstance(origin, str) and isinstance(id_, str)):
            raise ValueError(f"malformed change event: {data!r:.200}")
        return cls(tenant, frozenset(tables), origin, id_)
