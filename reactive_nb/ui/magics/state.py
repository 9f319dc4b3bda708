"""What the extension opened in one shell: the connection and the live queries of its
``%%reactive`` cells, kept on the shell so ``%reload_ext`` finds and closes them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from reactive_nb.events import DEFAULT_TENANT

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from reactive_nb.db import ReactiveDB
    from reactive_nb.live.query import LiveQuery

#: Attribute of the shell holding the extension's state.
STATE_ATTR = "_reactive_nb_state"
#: Variable of the user namespace bound to the connected ReactiveDB.
DB_VARIABLE = "rnb_db"


class MagicsState:
    """What the extension opened in one shell: the connection and the magic's live queries."""

    def __init__(self, shell: InteractiveShell) -> None:
        self.shell = shell
        self.db: ReactiveDB | None = None
        self.lives: dict[str, LiveQuery] = {}
        #: The tenant chosen by ``%reactive tenant`` (None: never chosen). Re-applied
        #: before every cell: a ContextVar set in a cell that awaits (IPython runs it as
        #: an asyncio task, in a copy of the context) would not reach the next cell.
        self.tenant: str | None = None

    def apply_tenant(self, *_info: Any) -> None:
        """The ``pre_run_cell`` hook: make the chosen tenant current for the cell."""
        if self.tenant is not None:
            from reactive_nb.model.tenants import use_tenant

            use_tenant(self.tenant)

    def require_db(self) -> ReactiveDB:
        """The open connection; a UsageError saying how to connect when there is none."""
        if self.db is None or self.db.closed:
            raise UsageError("not connected: run %reactive connect URL "
                             "(or set REACTIVE_NB_URL and run %reactive connect)")
        return self.db

    def close_lives(self) -> None:
        lives, self.lives = self.lives, {}
        for live in lives.values():
            live.close()

    def close(self) -> None:
        """Close every live query of the magic and the connection (idempotent)."""
        self.close_lives()
        if self.tenant is not None:
            from reactive_nb.model.tenants import use_tenant

            self.tenant = None
            use_tenant(DEFAULT_TENANT)
        db, self.db = self.db, None
        if db is not None:
            db.close()
            if self.shell.user_ns.get(DB_VARIABLE) is db:
                del self.shell.user_ns[DB_VARIABLE]
