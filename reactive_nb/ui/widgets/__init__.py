"""Jupyter widgets of reactive_nb: `LiveTable`, a paged table that follows a live query.

Imported only when a widget is needed (it loads anywidget, ipywidgets and pandas).
"""

from __future__ import annotations

from reactive_nb.ui.widgets.table import LiveTable, stop_flush_thread

__all__ = ["LiveTable", "stop_flush_thread"]


def _register() -> None:
    """Make ``LiveQuery.widget()`` (and notebook display) build a LiveTable."""
    from reactive_nb.live import query

    query.widget_factory = LiveTable


_register()
