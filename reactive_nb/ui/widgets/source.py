"""What a widget follows: `TableSource`, the shape of a live query as the widgets read it
(its traits, observed as in traitlets), and the timestamp format they show."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol

#: The traits of a source whose change a widget pushes.
SOURCE_TRAITS = ("df", "status", "error", "updated_at", "runs")


class TableSource(Protocol):
    """What a LiveTable shows: a `LiveQuery`, or anything with the same traits
    (read only; `observe`/`unobserve` as in traitlets)."""

    @property
    def df(self) -> Any: ...

    @property
    def status(self) -> str: ...

    @property
    def error(self) -> str | None: ...

    @property
    def updated_at(self) -> Any: ...

    @property
    def runs(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def primary_key(self) -> Sequence[str] | None: ...

    def observe(self, handler: Any, names: Any = ...) -> None: ...

    def unobserve(self, handler: Any, names: Any = ...) -> None: ...

    def set_visible(self, token: str, visible: bool | None) -> None: ...


def iso(value: Any) -> str | None:
    """A timestamp as ISO 8601 with its offset; naive datetimes are taken as UTC."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return str(value.isoformat())
    return str(value)
