"""reactive_nb: a reactive data layer for Jupyter.

Reactive functions run SQL and return DataFrames; results are cached and refresh
themselves, in the background, when a table they watch is written anywhere.

    import reactive_nb as rnb
    db = rnb.connect("sqlite:///teamhub.db")

    @db.reactive
    def agents(organization_id: str):
        return db.read_sql("SELECT * FROM agent WHERE organization_id = :o", o=organization_id)

    live = agents.live(organization_id="acme")   # keeps itself current
"""

# No ``from __future__ import annotations`` and no bare typing names here: every public
# name of this module is in ``__all__`` (tests/test_api.py checks ``vars()``).
import typing as _typing

from reactive_nb.errors import (
    CaptureError,
    ClosedError,
    ConfigError,
    InputError,
    ReactiveError,
    RelationError,
    TenantAccessDenied,
    TenantNotFound,
)
from reactive_nb.events import Change

if _typing.TYPE_CHECKING:
    from reactive_nb.db import ReactiveDB, connect
    from reactive_nb.live.functions import ReactiveFunction
    from reactive_nb.live.query import LiveQuery

__version__ = "0.1.0"

__all__ = [
    "CaptureError",
    "Change",
    "ClosedError",
    "ConfigError",
    "InputError",
    "LiveQuery",
    "ReactiveDB",
    "ReactiveError",
    "ReactiveFunction",
    "RelationError",
    "TenantAccessDenied",
    "TenantNotFound",
    "__version__",
    "connect",
    "load_ipython_extension",
    "unload_ipython_extension",
]

# Heavy modules (SQLAlchemy, pandas, traitlets) load on first use, so `import reactive_nb`
# and `%load_ext reactive_nb` stay fast.
_LAZY = {
    "connect": "db", "ReactiveDB": "db", "ReactiveFunction": "live.functions",
    "LiveQuery": "live.query",
    "load_ipython_extension": "ui.magics", "unload_ipython_extension": "ui.magics",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reactive_nb' has no attribute {name!r}")
    import importlib as _importlib

    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
