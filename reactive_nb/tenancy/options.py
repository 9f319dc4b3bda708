"""The options of ``db.tenancy(...)``, checked before anything connects.

Every option of the wrong shape is reported, all in one ConfigError line, so a notebook
user fixes them in one go rather than one per run.
"""

from __future__ import annotations

from typing import Any

from reactive_nb.errors import ConfigError


def check_options(**options: Any) -> None:
    """One ConfigError line per option of the wrong shape, before anything connects."""
    problems = []
    for name in ("database", "url", "access", "user", "list_sql"):
        value = options[name]
        if value is not None and (not isinstance(value, str) or not value.strip()):
            shown = "list" if name == "list_sql" else name
            problems.append(f"{shown}: expected a non-empty string or None, got {value!r:.60}")
    for name in ("access_ttl", "idle_timeout"):
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            problems.append(f"{name}: expected a number of seconds >= 0, got {value!r:.60}")
    for name in ("pool_size", "max_overflow"):
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"{name}: expected a whole number >= 0, got {value!r:.60}")
    if problems:
        raise ConfigError("tenancy(): " + "; ".join(problems))
