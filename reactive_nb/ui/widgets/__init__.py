"""Jupyter widgets of reactive_nb: `LiveTable`, a paged table that follows a live query;
`LiveChart` and `LiveValue` (a chart and a KPI of one); `Controls` (inputs as ipywidgets).

Imported only when a widget is needed (it loads anywidget, ipywidgets and pandas).
"""

from __future__ import annotations

from reactive_nb.ui.widgets.chart import LiveChart
from reactive_nb.ui.widgets.controls import Controls, build_controls
from reactive_nb.ui.widgets.flush import stop_flush_thread
from reactive_nb.ui.widgets.table import LiveTable
from reactive_nb.ui.widgets.value import LiveValue

__all__ = ["Controls", "LiveChart", "LiveTable", "LiveValue", "stop_flush_thread"]


def _register() -> None:
    """Make ``LiveQuery.widget()`` (and notebook display) build a LiveTable, and
    ``live.chart()``, ``live.value()``, ``fn.controls()`` build theirs."""
    from reactive_nb.live import functions, query

    query.widget_factory = LiveTable
    query.chart_factory = LiveChart
    query.value_factory = LiveValue
    functions.controls_factory = build_controls


_register()
