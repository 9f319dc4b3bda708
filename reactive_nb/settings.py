"""The options of ``connect()``, declared once and validated with pydantic.

A wrong shape (``relations=["agent"]``, ``min_interval=-1``, ``ttl="5"``) is a
``ConfigError`` naming the option and what it expects, raised before anything connects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reactive_nb.errors import ConfigError

Capture = Literal["auto", "local", "none"]


class Settings(BaseModel):
    """Options of a ReactiveDB (see ``connect``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    #: ``{"agent": ["organization", "message.from_agent_id"]}``: when ``agent`` changes,
    #: results reading ``organization`` or ``message`` are stale too.
    relations: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    #: A Redis URL or client: shared cache, versions and bus. None: in-process only.
    redis: Any = None
    #: "auto": this process's writes and, where triggers exist, everyone's; "local": this
    #: process's only; "none": nothing is captured (``db.invalidate`` by hand).
    capture: Capture = "auto"
    #: Seconds between two runs of one live query (a burst of writes costs few runs).
    min_interval: float = Field(0.05, ge=0)
    #: Worker threads running refreshes; 0: none (drive ``db.scheduler.step()`` in tests).
    workers: int = Field(4, ge=0)
    #: PostgreSQL triggers report the distinct values of this column as the tenants.
    tenant_column: str | None = None
    #: Known tenants: when given, any other name is TenantNotFound.
    tenants: tuple[str, ...] = ()
    #: First part of every Redis key. None: ``rnb:<identity>``, the identity derived from
    #: the database itself (not its URL), so databases sharing a Redis never share keys.
    key_prefix: str | None = Field(None, min_length=1)
    #: Bound of the in-process cache.
    cache_bytes: int = Field(512 * 2**20, gt=0)
    #: Install change-capture triggers at connect.
    install: bool = False

    @field_validator("relations", mode="before")
    @classmethod
    def _relations(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError("expected a mapping of table -> list of tables")
        shaped: dict[Any, Any] = {}
        for source, targets in value.items():
            shaped[source] = [targets] if isinstance(targets, str) else targets
        return shaped

    @field_validator("tenants", mode="before")
    @classmethod
    def _tenants(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("expected a list of tenant names, not one string")
        return value

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> Settings:
        """Validate ``options``; raise ConfigError naming every bad option."""
        try:
            return cls.model_validate(dict(options))
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "options"
                if err["type"] == "extra_forbidden":
                    problems.append(f"{where}: unknown option")
                else:
                    problems.append(f"{where}: {err['msg']} (got {err['input']!r:.60})")
            raise ConfigError("connect(): " + "; ".join(problems)) from None
