"""pandas in one place: copy-on-write on, and handler results turned into DataFrames."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

_configured = False


def pandas() -> Any:
    """The pandas module, with copy-on-write enabled (always on from pandas 3).

    Copy-on-write is what makes a cache hit O(1): the cache hands out ``df.copy(deep=False)``
    and a caller mutating it copies lazily instead of corrupting the cached frame.
    """
    global _configured
    import pandas as pd

    if not _configured:
        if int(pd.__version__.split(".")[0]) < 3:
            pd.set_option("mode.copy_on_write", True)
        _configured = True
    return pd


def to_frame(result: object, function: str) -> pd.DataFrame:
    """Turn a handler's return value (DataFrame, list of dicts, SQLAlchemy Result) into a frame."""
    import pandas as pd

    pandas()
    if isinstance(result, pd.DataFrame):
        return result
    if isinstance(result, list | tuple) and all(isinstance(r, Mapping) for r in result):
        records: pd.DataFrame = pd.DataFrame([dict(r) for r in result])
        return records
    keys = getattr(result, "keys", None)
    fetchall = getattr(result, "fetchall", None)
    if callable(keys) and callable(fetchall):  # sqlalchemy.engine.Result
        rows: pd.DataFrame = pd.DataFrame([tuple(r) for r in fetchall()], columns=list(keys()))
        return rows
    raise TypeError(
        f"{function} returned {type(result).__name__}; a reactive function must return a "
        "pandas.DataFrame, a list of dicts or a SQLAlchemy Result"
    )
