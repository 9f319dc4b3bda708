"""IPython magics: ``%load_ext reactive_nb``, ``%reactive ...`` and ``%%reactive NAME``.

An analyst writes SQL in a cell and gets a live table bound to a variable. The SQL's
``:name`` parameters are read from the notebook's variables and always sent as bound
parameters, never formatted into the SQL. The extension's state (the connection and the
live queries it made) lives on the shell object, so ``%reload_ext`` finds and closes it;
``%unload_ext`` stops every thread the extension started.

Loading stays light: SQLAlchemy, pandas and widgets are imported inside the magics.
This module holds the extension's entry points; `magic` the magic itself, `commands` its
line commands, `cell` the ``%%reactive`` cell, `parameters` the SQL's ``:name``
parameters, `state` what the extension opened and `usage` its help and parsers.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

from reactive_nb.ui.magics.magic import ReactiveMagics
from reactive_nb.ui.magics.state import STATE_ATTR, MagicsState

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["ReactiveMagics", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ip: InteractiveShell) -> None:
    """``%load_ext reactive_nb``: register ``%reactive`` / ``%%reactive``."""
    state = getattr(ip, STATE_ATTR, None)
    if state is None:
        state = MagicsState(ip)
        setattr(ip, STATE_ATTR, state)
        ip.events.register("pre_run_cell", state.apply_tenant)
    ip.register_magics(ReactiveMagics(ip, state))


def unload_ipython_extension(ip: InteractiveShell) -> None:
    """``%unload_ext reactive_nb``: close the live queries and the connection, stop every
    thread the extension started, and remove the magics."""
    state: MagicsState | None = getattr(ip, STATE_ATTR, None)
    if state is not None:
        try:
            state.close()
        finally:
            delattr(ip, STATE_ATTR)
            with contextlib.suppress(ValueError):
                ip.events.unregister("pre_run_cell", state.apply_tenant)
    # Magics.__init__ added the instance to %config's list: drop it with the magics.
    ip.configurables[:] = [c for c in ip.configurables if not isinstance(c, ReactiveMagics)]
    flush = sys.modules.get("reactive_nb.ui.widgets.flush")  # never import the widgets here
    if flush is not None:
        flush.stop_flush_thread()
    manager = ip.magics_manager
    if manager is None:
        return
    for kind in ("line", "cell"):
        manager.magics[kind].pop("reactive", None)
    manager.registry.pop(ReactiveMagics.__name__, None)
