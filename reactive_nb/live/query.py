"""LiveQuery: a reactive function bound to inputs and a tenant, that keeps itself current.

Its traits (``df``, ``status``, ``error``, ``updated_at``, ``runs``, ``attempts``) are set
by the scheduler's worker threads; observe them with traitlets (``live.observe``) or bind a
widget. It never replaces good data with an error: a failed refresh keeps ``df`` and sets
``status="error"`` and ``error``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import traitlets

from reactive_nb.live.groups import Update
from reactive_nb.live.scheduler import Scheduler

if TYPE_CHECKING:
    from reactive_nb.live.functions import Priority, ReactiveFunction

#: Builds the widget that displays a live query. The widget layer sits above this one and
#: registers itself here when imported; ``LiveQuery.widget()`` imports it on first use.
WIDGET_MODULE = "reactive_nb.ui.widgets"
widget_factory: Callable[[LiveQuery], Any] | None = None

#: A visibility report older than this no longer counts (the tab was closed, say).
VISIBILITY_TTL = 30.0

STATUSES = ("loading", "fresh", "stale", "refreshing", "error")


class LiveQuery(traitlets.HasTraits):
    """A live result; create it with ``fn.live(**inputs)``."""

    df = traitlets.Any(None, allow_none=True)
    status = traitlets.Enum(STATUSES, default_value="loading")
    error = traitlets.Unicode(None, allow_none=True)
    updated_at = traitlets.Any(None, allow_none=True)
    #: Handler runs that produced ``df`` (cache hits excluded).
    runs = traitlets.Int(0)
    #: Refresh attempts started by the scheduler (cache hits and failures included): the
    #: observable cost of invalidation, which ``runs`` hides when the cache answers.
    attempts = traitlets.Int(0)

    def __init__(self, scheduler: Scheduler, function: ReactiveFunction, inputs: dict[str, Any],
                 key: str, tenant: str, priority: Priority,
                 primary_key: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self._scheduler = scheduler
        self.function = function
        self.inputs = inputs
        self.key = key
        self.tenant = tenant
        self.priority = priority
        self.primary_key = primary_key
        self.closed = False
        # _reports guards nothing but itself: token -> (visible, reported at monotonic time)
        self._reports: dict[str, tuple[bool | None, float]] = {}
        self._reports_lock = threading.Lock()
        self._state_lock = threading.Lock()  # one receive() at a time vs snapshot()
        self._applied = 0  # seq of the last update applied (see Update.seq)
        self._widget: Any = None

    @property
    def name(self) -> str:
        return self.function.name

    @property
    def group_key(self) -> tuple[str, str, int]:
        """Live queries with the same group key share one run (same tenant, key, definition)."""
        return (self.tenant, self.key, self.function.fingerprint)

    def __repr__(self) -> str:
        rows = "-" if self.df is None else len(self.df)
        return f"<LiveQuery {self.key} tenant={self.tenant} status={self.status} rows={rows}>"

    # -- scheduler side --------------------------------------------------------------------

    def receive(self, update: Update) -> None:
        """Set traits from one scheduling step (called by the scheduler, its lock released).

        The values are stored under the state lock, so one update is atomic for
        snapshot(); observers are told after it is released, in the order of the traits.
        Stored without traitlets' ``set()``, which tells a change with ``old == new``: for
        two frames that compares every cell (8 ms for 1M rows x 10 columns), and
        ``hold_trait_notifications`` would compare the new frame with itself once more.
        Frames are told apart by identity, the other values by equality.
        """
        changes: list[tuple[str, Any, Any]] = []

        def store(name: str, value: Any) -> None:
            old = getattr(self, name)
            if value is old or (name != "df" and value == old):
                return
            self._trait_values[name] = value
            changes.append((name, old, value))

        with self._state_lock:
            if update.attempt:
                store("attempts", self.attempts + 1)
            if update.ran:
                store("runs", self.runs + 1)
            if update.seq >= self._applied:  # else overtaken: a later decision was applied
                self._applied = update.seq
                if update.cleared:
                    store("df", None)
                if update.df is not None:
                    store("df", update.df)
                if update.updated_at is not None:
                    store("updated_at", update.updated_at)
                store("error", update.error)
                store("status", update.status)
        for name, old, new in changes:
            self._notify_trait(name, old, new)

    def snapshot(self) -> tuple[Any, str, str | None, Any, int]:
        """``(df, status, error, updated_at, runs)`` of one consistent moment."""
        with self._state_lock:
            return self.df, self.status, self.error, self.updated_at, self.runs

    # -- user side -------------------------------------------------------------------------

    def wait(self, timeout: float = 5.0) -> LiveQuery:
        """Block until the result is fresh; raise TimeoutError (with the last error) if not."""
        if self.closed:
            raise RuntimeError(f"{self.key} is closed")
        if not self._scheduler.wait_fresh(self, timeout):
            detail = f": last error {self.error}" if self.error else ""
            raise TimeoutError(f"{self.key} not fresh after {timeout} s "
                               f"(status {self.status}){detail}")
        return self

    def refresh(self) -> None:
        """Queue a refresh now, bypassing the cache."""
        self._scheduler.refresh(self)

    def close(self) -> None:
        """Stop refreshing; the last frame stays readable."""
        if not self.closed:
            self.closed = True
            self._scheduler.detach(self)
            if self._widget is not None:
                self._widget.close()
                self._widget = None

    # -- visibility ------------------------------------------------------------------------

    def set_visible(self, token: str, visible: bool | None) -> None:
        """A widget reports whether it is on screen (None: it no longer knows)."""
        with self._reports_lock:
            self._reports[token] = (visible, time.monotonic())
        self._scheduler.visibility_changed()

    @property
    def visible(self) -> bool:
        """False only when every recent report says hidden; never reported counts as visible."""
        now = time.monotonic()
        with self._reports_lock:
            recent = [v for v, at in self._reports.values()
                      if v is not None and now - at < VISIBILITY_TTL]
        return not recent or any(recent)

    # -- display ---------------------------------------------------------------------------

    def widget(self, **options: Any) -> Any:
        """The live table widget bound to this query (one per query); ``page_size`` (rows
        per page) and ``height`` (pixels) set it up, now or on a later call."""
        if self._widget is None:
            if widget_factory is None:
                import importlib

                importlib.import_module(WIDGET_MODULE)  # registers widget_factory
            assert widget_factory is not None, f"{WIDGET_MODULE} registers no widget"
            self._widget = widget_factory(self, **options)
        elif options:
            self._widget.configure(**options)
        return self._widget

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget()._repr_mimebundle_(**kwargs)

    # -- dashboards (issue 13): built by the widget layer, which registers the factories --

    def chart(self, x: str, y: str | list[str], *, color: str | None = None,
              kind: str = "line", **options: Any) -> Any:
        """A chart of ``df`` (``kind``: line, bar or area) that redraws itself when the
        frame changes; one series per ``y`` column, or per value of ``color``."""
        _load_widgets()
        assert chart_factory is not None, f"{WIDGET_MODULE} registers no chart"
        return chart_factory(self, x=x, y=y, color=color, kind=kind, **options)

    def value(self, column: str, *, label: str | None = None, format: str = "{:,}",
              **options: Any) -> Any:
        """A KPI widget: ``df[column]`` of the first row (or ``"count"``: the row count),
        formatted with ``format``; it updates and flashes on change."""
        _load_widgets()
        assert value_factory is not None, f"{WIDGET_MODULE} registers no value widget"
        return value_factory(self, column, label=label, format=format, **options)

    def rebind(self, inputs: dict[str, Any] | None = None, *, tenant: str | None = None) -> None:
        """Follow other inputs (validated; InputError leaves everything as it was) or
        another tenant. ``df`` keeps the last frame until the new result arrives, so every
        widget bound to this query swaps to the new data by itself."""
        values = self.function.validate(**(self.inputs if inputs is None else inputs))
        key = self.function.key_for(values)
        who = self.tenant if tenant is None else tenant
        if (key, who) == (self.key, self.tenant) or self.closed:
            return
        self._scheduler.detach(self)  # leaves the old group (scheduler keys by these fields)
        self.inputs, self.key, self.tenant = values, key, who
        self._scheduler.attach(self)


#: Build a chart / a KPI value of a live query; registered by the widget layer.
chart_factory: Callable[..., Any] | None = None
value_factory: Callable[..., Any] | None = None


def _load_widgets() -> None:
    if chart_factory is None or value_factory is None:
        import importlib

        importlib.import_module(WIDGET_MODULE)  # registers the factories
