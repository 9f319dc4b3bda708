"""`ReactiveMagics`: the ``%reactive`` / ``%%reactive`` magic, which dispatches to the
line commands (`commands.py`) and the cell (`cell.py`), and the extension's settings
(``%config ReactiveMagics.page_size``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, magics_class
from traitlets import Int

from reactive_nb.ui.magics import commands
from reactive_nb.ui.magics.cell import define
from reactive_nb.ui.magics.state import MagicsState
from reactive_nb.ui.magics.usage import (
    SQL_WORDS,
    USAGE,
    argument,
    line_cell_magic,
    magic_arguments,
    parse_argstring,
    split,
)

if TYPE_CHECKING:
    import pandas as pd
    from IPython.core.interactiveshell import InteractiveShell


@magics_class
class ReactiveMagics(Magics):
    """``%reactive`` (line) and ``%%reactive`` (cell). Also the extension's settings:
    ``%config ReactiveMagics.page_size = 100`` applies to the tables created afterwards."""

    page_size = Int(50, help="Rows per page of the live table (each page request the "
                             "browser makes asks for at least this many rows).").tag(config=True)
    height = Int(0, help="Height of the live table's scroll box in pixels (0: as many "
                         "rows as there are, up to 15).").tag(config=True)

    def __init__(self, shell: InteractiveShell, state: MagicsState) -> None:
        super().__init__(shell)
        self.state = state

    def table_options(self) -> dict[str, int | None]:
        """``LiveTable`` options from the settings, validated when they are used."""
        if self.page_size < 1:
            raise UsageError(f"ReactiveMagics.page_size must be at least 1, not {self.page_size}")
        if self.height < 0:
            raise UsageError(f"ReactiveMagics.height must be 0 or more, not {self.height}")
        return {"page_size": self.page_size, "height": self.height or None}

    @magic_arguments("%reactive")  # shown as "%%reactive": IPython adds a "%"
    @argument("name", help="the variable the live query is bound to (also the function name)")
    @argument("--deps", help="tables it depends on, comma separated (default: the tables "
                             "the SQL reads)")
    @argument("--priority", choices=["high", "normal", "low"], default="normal",
              help="refresh order among visible tables")
    @argument("--ttl", type=float, help="seconds a result may be served without a change")
    @argument("--key", help="primary-key columns, comma separated (to highlight changed rows)")
    @argument("--no-display", action="store_true", help="bind the variable, show no table")
    @line_cell_magic
    def reactive(self, line: str, cell: str | None = None) -> Any:
        """Reactive SQL for notebooks.

        As a cell (``%%reactive NAME``): define the reactive function NAME from the SQL
        of the cell and bind its live query to the variable NAME. Each ``:param`` is read
        from the notebook variable of the same name and sent as a bound parameter.
        As a line: ``%reactive connect|status|refresh|priorities|tenant|tenants|close``
        (``%reactive --help`` lists them).
        """
        if cell is not None:
            return self._define(line, cell)
        words = split(line)
        if not words or words[0] in ("-h", "--help", "help"):
            print(USAGE)
            return None
        command, rest = words[0], words[1:]
        if command == "connect":
            return commands.connect(self.state, rest)
        if command.lower() in SQL_WORDS:
            raise UsageError("%reactive takes a command, not SQL: write the SQL in a cell "
                             "that starts with %%reactive NAME (its live query is bound to "
                             "the variable NAME)")
        if command == "status":
            commands.status(self.state, rest)
        elif command == "tenant":
            commands.tenant(self.state, rest)
        elif command == "tenants":
            return commands.tenants(self.state, rest)
        elif command == "refresh":
            commands.refresh(self.state, rest)
        elif command == "priorities":
            self.state.require_db().priorities(rest)
        elif command == "close":
            if rest:
                raise UsageError("%reactive close takes no arguments")
            self.state.close()
        else:
            raise UsageError(f"%reactive: unknown command {command!r} (connect, status, "
                             "refresh, priorities, tenant, tenants, close; see --help)")
        return None

    def _define(self, line: str, sql: str) -> None:
        try:
            args = parse_argstring(self.reactive, line)
        except UsageError as exc:
            raise UsageError(f"%%reactive: {exc} (see %%reactive?)") from None
        define(self.state, args, sql, self.table_options)

    def status_frame(self) -> pd.DataFrame:
        """What ``%reactive status`` shows: one row per live query of ``%%reactive``."""
        return commands.status_frame(self.state.lives)
