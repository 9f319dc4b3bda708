"""The options of ``connect()`` and ``@db.reactive``, declared once and validated with pydantic.

A wrong shape (``relations=["agent"]``, ``min_interval=-1``, ``ttl="5"``) is one
``ConfigError`` line naming the option and the shape it expects, raised before anything
connects or runs. Numbers and flags are strict: ``"5"`` is not a number of seconds and
``"yes"`` is not True, so a typo is refused instead of guessed at.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reactive_nb.errors import ConfigError, closest

Capture = Literal["auto", "local", "none"]
Priority = Literal["high", "normal", "low"]

#: Schemes redis-py accepts in a URL.
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

_Seconds = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)]
_Count = Annotated[int, Field(ge=0, strict=True)]


class _Options(BaseModel):
    """Options validated as one model; ``SHAPES`` says what each option expects."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    #: Option -> the shape it expects, in the words of the error message.
    SHAPES: ClassVar[dict[str, str]] = {}

    @classmethod
    def _parse(cls, options: Mapping[str, Any], where: str) -> Any:
        """Validate ``options``; raise one ConfigError line naming every bad option."""
        try:
            return cls.model_validate(dict(options))
        except ValidationError as exc:
            problems = [cls._problem(err["loc"], err["type"], err["input"])
                        for err in exc.errors()]
            raise ConfigError(f"{where}: " + "; ".join(dict.fromkeys(problems))) from None

    @classmethod
    def _problem(cls, loc: tuple[int | str, ...], kind: str, value: Any) -> str:
        option = str(loc[0]) if loc else "options"
        if kind == "extra_forbidden":
            known = list(cls.model_fields)
            suggestion = closest(option, known)
            hint = (f"did you mean {suggestion!r}?" if suggestion
                    else "options: " + ", ".join(known))
            return f"{option}: unknown option ({hint})"
        shape = cls.SHAPES.get(option, "a valid value")
        if kind == "not_a_string_list":
            return f"{option}: expected {shape}, not one string (write {option}=[{value!r}])"
        return f"{option}: expected {shape}, {_found(option, loc[1:], value)}"


def _found(option: str, path: tuple[int | str, ...], value: Any) -> str:
    """``got 5``, or where inside the option the wrong value is (``relations['a'] is 1``)."""
    shown = _short(value)
    if not path:
        return f"got {shown}"
    if path[-1] == "[key]":
        return f"but {option} has the key {shown}"
    return f"but {option}{''.join(f'[{p!r}]' for p in path)} is {shown}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _string_list(value: Any) -> Any:
    """Refuse one string where a list of names is expected (it would be iterated per letter)."""
    if isinstance(value, str | bytes):
        from pydantic_core import PydanticCustomError

        raise PydanticCustomError("not_a_string_list", "one string, not a list")
    return value


class Settings(_Options):
    """Options of a ReactiveDB (see ``connect``)."""

    SHAPES: ClassVar[dict[str, str]] = {
        "relations": "a mapping {table: [table, ...]}, like {'agent': ['organization']}",
        "redis": "a Redis URL (" + ", ".join(REDIS_SCHEMES) + "), a redis.Redis client "
                 "or None",
        "capture": "'auto', 'local' or 'none'",
        "min_interval": "a number of seconds >= 0",
        "workers": "a whole number >= 0 (0: no worker threads)",
        "tenant_column": "a column name or None",
        "tenants": "a list of tenant names",
        "key_prefix": "a non-empty string or None",
        "cache_bytes": "a whole number of bytes > 0",
        "install": "True or False",
    }

    #: ``{"agent": ["organization", "message.from_agent_id"]}``: when ``agent`` changes,
    #: results reading ``organization`` or ``message`` are stale too.
    relations: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    #: A Redis URL or client: shared cache, versions and bus. None: in-process only.
    redis: Any = None
    #: "auto": this process's writes and, where triggers exist, everyone's; "local": this
    #: process's only; "none": nothing is captured (``db.invalidate`` by hand).
    capture: Capture = "auto"
    #: Seconds between two runs of one live query (a burst of writes costs few runs).
    min_interval: _Seconds = 0.05
    #: Worker threads running refreshes; 0: none (drive ``db.scheduler.step()`` in tests).
    workers: _Count = 4
    #: PostgreSQL triggers report the distinct values of this column as the tenants.
    tenant_column: str | None = Field(None, strict=True)
    #: Known tenants: when given, any other name is TenantNotFound.
    tenants: tuple[Annotated[str, Field(strict=True)], ...] = ()
    #: First part of every Redis key. None: ``rnb:<identity>``, the identity derived from
    #: the database itself (not its URL), so databases sharing a Redis never share keys.
    key_prefix: str | None = Field(None, min_length=1, strict=True)
    #: Bound of the in-process cache.
    cache_bytes: int = Field(512 * 2**20, gt=0, strict=True)
    #: Install change-capture triggers at connect.
    install: bool = Field(False, strict=True)

    @field_validator("relations", mode="before")
    @classmethod
    def _relations(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError("not a mapping")
        # One target may be given as a string: {"agent": "organization"}.
        return {source: [targets] if isinstance(targets, str) else targets
                for source, targets in value.items()}

    @field_validator("tenants", mode="before")
    @classmethod
    def _tenants(cls, value: Any) -> Any:
        return _string_list(value)

    @field_validator("redis")
    @classmethod
    def _redis(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            if not value.startswith(REDIS_SCHEMES):
                raise ValueError("not a Redis URL")
            return value
        if not hasattr(value, "pipeline"):  # what every redis-py client has
            raise ValueError("not a Redis client")
        return value

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> Settings:
        """Validate ``connect()``'s options; raise ConfigError naming every bad option."""
        parsed: Settings = cls._parse(options, "connect()")
        return parsed


class FunctionOptions(_Options):
    """Options of ``@db.reactive`` (see ``ReactiveFunction``)."""

    SHAPES: ClassVar[dict[str, str]] = {
        "name": "a non-empty name without spaces (dots are fine: 'agents.byOrg')",
        "dependencies": "a list of table names (or None: learned from what it reads)",
        "ttl": "a positive number of seconds (or None: no expiry)",
        "cache": "True or False",
        "key": "a function of the inputs returning the cache key (or None)",
        "priority": "one of 'high', 'normal' or 'low'",
    }

    name: str = Field(pattern=r"^[^\s]+$", strict=True)
    dependencies: tuple[Annotated[str, Field(strict=True)], ...] | None = None
    ttl: float | None = Field(None, gt=0, strict=True, allow_inf_nan=False)
    cache: bool = Field(True, strict=True)
    key: Callable[..., Any] | None = None
    priority: Priority = "normal"

    @field_validator("dependencies", mode="before")
    @classmethod
    def _dependencies(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            raise ValueError("a mapping")
        value = _string_list(value)
        if value is not None and not isinstance(value, list | tuple):
            try:  # a set, a generator, dict keys...
                return list(value)
            except TypeError:  # not iterable: reported as not a list
                return value
        return value

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> FunctionOptions:
        """Validate ``@db.reactive``'s options; raise ConfigError naming every bad one."""
        name = options.get("name")
        where = f"reactive({name!r})" if isinstance(name, str) and name else "reactive()"
        parsed: FunctionOptions = cls._parse(options, where)
        return parsed
