"""What capture writes into: the one interface between the capture sources and the layers
above. Capture knows nothing of versions, buses or tenants' fan-out; it reports commits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from reactive_nb.capture.external import ExternalChange


class ChangeSink(Protocol):
    """Receives every committed write a capture source sees."""

    def committed(self, tenant: str, tables: frozenset[str]) -> None:
        """This process committed a write to ``tables`` as ``tenant`` (after the commit)."""
        ...

    def external(self, change: ExternalChange) -> None:
        """Another client committed a write (a trigger's notification)."""
        ...
