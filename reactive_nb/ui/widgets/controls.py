"""`fn.controls(**choices)`: ipywidgets built from a reactive function's signature, bound
to one live query whose inputs follow them.

Each input gets a control from its annotation (or from its entry in ``choices``):
``Literal[...]`` or a list of options -> Dropdown; ``bool`` -> Checkbox; an int or float
bounded on both sides (``Annotated[int, Field(ge=1, le=100)]``, or a ``(min, max)``
choice) -> slider; ``date`` -> DatePicker; ``str`` -> Text; other ints and floats -> a
number box. A choice that is neither a list nor a pair fixes the input (no control).

A change waits ``debounce`` seconds for the next one (typing), then rebinds the live query
(`LiveQuery.rebind`): every widget of the query follows. Invalid inputs raise InputError
in Python; the message is shown next to the controls and the query keeps its inputs and
last good frame. Control observers may run on the kernel's main thread or a subshell
thread; the debounce timer runs on its own daemon thread; the error label is written only
by the shared flush thread (one writer per widget).
"""

from __future__ import annotations

import datetime as dt
import html
import inspect
import threading
import types
import typing
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from reactive_nb.errors import InputError
from reactive_nb.ui.widgets.flush import SHARED

if TYPE_CHECKING:
    from reactive_nb.live.functions import ReactiveFunction
    from reactive_nb.live.query import LiveQuery
    from reactive_nb.ui.widgets.flush import Flusher

TIMER_NAME = "reactive_nb-controls-debounce"


class Controls(widgets.VBox):  # type: ignore[misc]
    """The controls of one live query (`live`), and the error of the last change."""

    def __init__(self, fn: ReactiveFunction, live: LiveQuery | None = None, *,
                 debounce: float = 0.3, tenant: str | None = None,
                 choices: dict[str, Any] | None = None, flusher: Flusher | None = None) -> None:
        choices = dict(choices or {})
        unknown = sorted(set(choices) - set(fn.signature.parameters))
        if unknown:
            raise InputError(fn.name, [f"{name}: unexpected input" for name in unknown])
        self.function = fn
        self.debounce = max(0.0, float(debounce))
        self.controls: dict[str, widgets.Widget] = {}
        self.fixed: dict[str, Any] = {}
        hints = _hints(fn)
        current = live.inputs if live is not None else {}
        for name, param in fn.signature.parameters.items():
            default = current.get(name, param.default)
            control = _control(name, hints.get(name, param.annotation), default,
                               choices.get(name, inspect.Parameter.empty))
            if control is None:
                self.fixed[name] = choices.get(name, default)
            else:
                self.controls[name] = control
        self.error_label = widgets.HTML("", layout=widgets.Layout(min_height="0px"))
        self.error_label.add_class("rnb-controls-error")
        self._lock = threading.Lock()  # guards _error, _timer, _closed: field updates only
        self._error: str | None = None
        self._timer: threading.Timer | None = None
        self._closed = False
        self._flusher = SHARED if flusher is None else flusher
        self.live: LiveQuery = live if live is not None else fn.live(self.inputs(),
                                                                     tenant=tenant)
        super().__init__([widgets.HBox(list(self.controls.values())), self.error_label])
        self.add_class("rnb-controls")
        self._flusher.register(self)
        for control in self.controls.values():
            control.observe(self._on_change, names=["value"])

    def inputs(self) -> dict[str, Any]:
        """The inputs the controls show now (fixed ones included; not validated)."""
        values = dict(self.fixed)
        values.update({name: c.value for name, c in self.controls.items()})
        return {k: v for k, v in values.items() if v is not inspect.Parameter.empty}

    @property
    def error(self) -> str | None:
        """The message of the last change's InputError; None once a change was valid."""
        with self._lock:
            return self._error

    def apply(self) -> None:
        """Rebind the live query to the controls' values now (the debounce ends here)."""
        with self._lock:
            if self._closed:
                return
            self._timer = None
        try:
            self.live.rebind(self.inputs())
        except InputError as exc:
            error: str | None = str(exc)
        else:
            error = None
        with self._lock:
            changed, self._error = error != self._error, error
        if changed:
            self._flusher.request(self)

    def close(self) -> None:
        """Stop following the controls (the live query stays open: it may have other
        widgets); cancels a pending change."""
        if not hasattr(self, "_lock"):  # __init__ refused its arguments: nothing to undo
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        for control in self.controls.values():
            control.unobserve(self._on_change, names=["value"])
        self._flusher.unregister(self)
        super().close()

    def _on_change(self, _change: Any) -> None:
        if self.debounce == 0:
            self.apply()
            return
        timer = threading.Timer(self.debounce, self.apply)
        timer.name, timer.daemon = TIMER_NAME, True
        with self._lock:
            if self._closed:
                return
            previous, self._timer = self._timer, timer
        if previous is not None:
            previous.cancel()
        timer.start()

    def _flush(self) -> bool:
        """Show the latest error (flush thread only: the label's one writer)."""
        error = self.error
        self.error_label.value = ("" if error is None else
                                  f'<span style="color:#b71c1c">{html.escape(error)}</span>')
        return False


def build_controls(fn: ReactiveFunction, live: LiveQuery | None = None, *,
                   debounce: float = 0.3, tenant: str | None = None,
                   choices: dict[str, Any] | None = None) -> Controls:
    """What ``fn.controls(...)`` returns (registered as its factory)."""
    return Controls(fn, live, debounce=debounce, tenant=tenant, choices=choices)


def _hints(fn: ReactiveFunction) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn.handler, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        return {}


def _bounds(metadata: list[Any]) -> tuple[Any, Any]:
    low = high = None
    for item in metadata:
        for attr in ("ge", "gt"):
            if getattr(item, attr, None) is not None:
                low = getattr(item, attr)
        for attr in ("le", "lt"):
            if getattr(item, attr, None) is not None:
                high = getattr(item, attr)
        for part in getattr(item, "metadata", []) or []:  # pydantic FieldInfo
            sub_low, sub_high = _bounds([part])
            low = low if sub_low is None else sub_low
            high = high if sub_high is None else sub_high
    return low, high


def _control(name: str, annotation: Any, default: Any, choice: Any) -> widgets.Widget | None:
    """The control of one input, or None when ``choice`` fixes it."""
    empty = inspect.Parameter.empty
    base, metadata = annotation, []
    if typing.get_origin(annotation) is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
    args = [a for a in typing.get_args(base) if a is not type(None)]
    if typing.get_origin(base) in (typing.Union, types.UnionType) and len(args) == 1:  # X | None
        base = args[0]
    value = None if default is empty else default
    if isinstance(choice, list) or (choice is empty and typing.get_origin(base) is typing.Literal):
        options = list(choice) if isinstance(choice, list) else list(typing.get_args(base))
        return widgets.Dropdown(options=options, value=value if value in options else options[0],
                                description=name)
    low, high = _bounds(metadata)
    if isinstance(choice, tuple) and len(choice) == 2:
        low, high = choice
    elif choice is not empty:
        return None
    if base is bool:
        return widgets.Checkbox(value=bool(value), description=name)
    if base in (int, float) and low is not None and high is not None:
        slider = widgets.IntSlider if base is int else widgets.FloatSlider
        start = low if value is None else min(max(value, low), high)
        return slider(value=start, min=low, max=high, description=name,
                      continuous_update=False)
    if base is int:
        return widgets.IntText(value=0 if value is None else value, description=name)
    if base is float:
        return widgets.FloatText(value=0.0 if value is None else value, description=name)
    if base is dt.date:
        return widgets.DatePicker(value=value, description=name)
    return widgets.Text(value="" if value is None else str(value), description=name,
                        continuous_update=False)
