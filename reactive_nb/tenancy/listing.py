"""The tenants a user may open, as a reactive function.

``Tenancy.list()`` and ``Tenancy.live()`` go through one ``ReactiveFunction``, so the list
is cached like any result and refreshes when the directory's tables change: the rows of
the ``list=`` query whose access check passes for the user.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from reactive_nb.live.functions import Owner, ReactiveFunction
    from reactive_nb.tenancy.access import AccessControl
    from reactive_nb.tenancy.resolve import Resolver

#: Name of the reactive function behind ``Tenancy.list()`` / ``Tenancy.live()``.
LIST_FUNCTION = "reactive_nb.tenants"


def list_function(owner: Owner, resolver: Resolver, control: AccessControl | None,
                  dependencies: Iterable[str]) -> ReactiveFunction:
    """The reactive function ``tenants(user)`` listing what ``user`` may open, depending
    on ``dependencies`` (the tables the list and access queries read)."""
    from reactive_nb.live.functions import ReactiveFunction
    from reactive_nb.model.inputs import canonical_json

    def tenants(user: str) -> pd.DataFrame:
        frame = resolver.frame()
        if control is None or frame.empty:
            return frame
        ids = [str(v) for v in frame.iloc[:, 0]]
        granted = control.ask(ids, user)  # fresh: this result is cached by versions
        allowed: pd.DataFrame = frame[[granted[t] for t in ids]].reset_index(drop=True)
        return allowed

    # The queries are part of the key: another configuration never shares its entries.
    queries = f"{resolver.list_sql}\0{control.sql if control is not None else ''}"
    digest = hashlib.sha256(queries.encode()).hexdigest()[:16]
    return ReactiveFunction(
        owner, tenants, name=LIST_FUNCTION, dependencies=dependencies,
        key=lambda inputs: f"{LIST_FUNCTION}:{digest}:{canonical_json(inputs)}")
