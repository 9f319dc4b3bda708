"""A reactive function's inputs: validated by a pydantic model of the handler's signature,
and turned into a canonical cache key.

Validation reports every problem of a call in one ``InputError`` line; the key is
type-tagged canonical JSON (``model.inputs``), so distinct inputs never share an entry.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from reactive_nb.errors import InputError, closest
from reactive_nb.model.inputs import canonical_json

if TYPE_CHECKING:
    from pydantic import BaseModel

KeyFunction = Callable[[Mapping[str, Any]], str]


class Inputs:
    """The inputs of one handler: ``validate`` binds and checks, ``key_for`` names."""

    def __init__(self, handler: Callable[..., Any], name: str,
                 key_function: KeyFunction | None = None) -> None:
        self.name = name
        self.signature = inspect.signature(handler)
        self.names = list(self.signature.parameters)
        self.model = _input_model(handler, self.signature, name)
        self.key_function = key_function

    def validate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Bind and validate inputs; raise InputError listing every problem."""
        from pydantic import ValidationError

        names = self.names
        if len(args) > len(names):
            raise InputError(self.name, [f"takes {len(names)} inputs but {len(args)} were given"])
        values = dict(zip(names, args, strict=False))
        problems = [f"{k}: given twice" for k in kwargs if k in values]
        values.update(kwargs)
        try:
            model = self.model.model_validate(values)
        except ValidationError as exc:
            raise InputError(self.name, problems + _problems(exc, names)) from None
        if problems:
            raise InputError(self.name, problems)
        return {name: getattr(model, name) for name in names}

    def key_for(self, inputs: Mapping[str, Any]) -> str:
        """Cache key of validated inputs: ``name:`` + canonical compact JSON, or ``key=``'s.

        The JSON is type-tagged where plain JSON would merge values (None and NaN, a tuple
        and a list, bytes and str, a datetime and its ISO string), so distinct inputs never
        share a key; ordinary inputs keep the plain form ``{"limit":50,"org":"acme"}``.
        """
        if self.key_function is not None:
            return str(self.key_function(inputs))
        try:
            payload = canonical_json(inputs)
        except TypeError as exc:
            raise InputError(self.name, [f"cannot be part of a cache key: {exc}"]) from None
        return f"{self.name}:{payload}"


def _input_model(handler: Callable[..., Any], sig: inspect.Signature,
                 name: str) -> type[BaseModel]:
    """A pydantic model of the handler's parameters (annotations with their ``Annotated``
    constraints, defaults, no extras)."""
    from pydantic import ConfigDict, create_model

    try:
        hints = typing.get_type_hints(handler, include_extras=True)
    except Exception:  # unresolvable forward references: validate those inputs as Any
        hints = {}
    fields: dict[str, Any] = {}
    for param in sig.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"{name}: *args and **kwargs are not supported, name every input")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints.get(param.name, Any), default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())
    model: type[BaseModel] = create_model(
        f"{name.replace('.', '_')}_inputs", __config__=config, **fields)
    return model


def _problems(exc: Any, known: list[str]) -> list[str]:
    """One readable line per field problem of a pydantic ValidationError."""
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "inputs"
        if err["type"] == "missing":
            problems.append(f"{where}: missing")
        elif err["type"] == "extra_forbidden":
            hint = closest(where, known)
            suggestion = f" (did you mean {hint!r}?)" if hint else ""
            problems.append(f"{where}: unexpected input{suggestion}")
        else:
            problems.append(f"{where}: {err['msg']} (got {err['input']!r:.60})")
    return problems
