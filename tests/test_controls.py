"""`fn.controls(...)`: ipywidgets from the signature, bound to one live query whose inputs
follow them; an invalid value shows the InputError and keeps the last good frame."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import ipywidgets as widgets
import pytest
from pydantic import Field

import reactive_nb as rnb
from reactive_nb.ui.widgets import Controls
from reactive_nb.ui.widgets.flush import Flusher


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Any]:
    database = rnb.connect(f"sqlite:///{tmp_path}/c.db", workers=0, min_interval=0)
    database.execute("CREATE TABLE msg (id INTEGER PRIMARY KEY, org TEXT, body TEXT)")
    database.execute("INSERT INTO msg (org, body) VALUES ('acme', 'a1'), ('acme', 'a2'), "
                     "('globex', 'g1')")
    yield database
    database.close()


def _messages(db: Any) -> Any:
    @db.reactive(dependencies=["msg"])
    def messages(org: Literal["acme", "globex"] = "acme", limit: int = 10) -> Any:
        return db.read_sql("SELECT body FROM msg WHERE org = :org ORDER BY id LIMIT :limit",
                           org=org, limit=limit)

    return messages


def test_controls_follow_the_signature(db: Any) -> None:
    @db.reactive(dependencies=["msg"])
    def report(org: Literal["acme", "globex"], urgent: bool = False,
               limit: Annotated[int, Field(ge=1, le=50)] = 10, ratio: float = 0.5,
               since: dt.date | None = None, text: str = "", channel: str = "chat",
               page: int = 1) -> Any:
        return db.read_sql("SELECT body FROM msg WHERE org = :org", org=org)

    controls = report.controls(channel=["chat", "email"], page=(1, 9), text="fixed")
    kinds = {name: type(c) for name, c in controls.controls.items()}
    assert kinds == {"org": widgets.Dropdown, "urgent": widgets.Checkbox,
                     "limit": widgets.IntSlider, "ratio": widgets.FloatText,
                     "since": widgets.DatePicker, "channel": widgets.Dropdown,
                     "page": widgets.IntSlider}
    assert controls.fixed == {"text": "fixed"}
    assert (controls.controls["limit"].min, controls.controls["limit"].max) == (1, 50)
    assert controls.live.inputs["org"] == "acme" and controls.live.inputs["text"] == "fixed"
    with pytest.raises(rnb.InputError, match="nope: unexpected input"):
        report.controls(nope=[1])
    controls.close()


def test_inputs_follow_the_controls(db: Any) -> None:
    controls = _messages(db).controls(debounce=0)
    live = controls.live
    db.scheduler.run_until_idle()
    assert list(live.df["body"]) == ["a1", "a2"]
    controls.controls["org"].value = "globex"
    db.scheduler.run_until_idle()
    assert live.inputs == {"org": "globex", "limit": 10}
    assert list(live.df["body"]) == ["g1"] and live.status == "fresh"
    controls.controls["limit"].value = 0  # still valid: an empty frame
    db.scheduler.run_until_idle()
    assert len(live.df) == 0
    # The live query still refreshes itself on its new inputs.
    controls.controls["limit"].value = 5
    db.execute("INSERT INTO msg (org, body) VALUES ('globex', 'g2')")
    db.scheduler.run_until_idle()
    assert list(live.df["body"]) == ["g1", "g2"]
    controls.close()


def test_an_invalid_value_shows_the_error_and_keeps_the_last_frame(db: Any) -> None:
    flusher = Flusher(interval=0.1, threaded=False)
    fn = _messages(db)
    live = fn.live(org="acme")
    db.scheduler.run_until_idle()
    frame = live.df
    controls = Controls(fn, live, debounce=0, choices={"org": ["acme", "globex", "initech"]},
                        flusher=flusher)
    controls.controls["org"].value = "initech"
    db.scheduler.run_until_idle()
    error = controls.error
    assert error is not None and "org: Input should be 'acme' or 'globex'" in error
    assert live.df is frame and live.inputs["org"] == "acme" and live.status == "fresh"
    assert controls.error_label.value == ""  # written by the flush thread only
    flusher.flush_due()
    assert "Input should be" in controls.error_label.value
    controls.controls["org"].value = "globex"
    db.scheduler.run_until_idle()
    flusher.flush_due()
    assert controls.error is None and controls.error_label.value == ""
    assert list(live.df["body"]) == ["g1"]
    controls.close()


def test_changes_are_debounced(tmp_path: Path) -> None:
    db = rnb.connect(f"sqlite:///{tmp_path}/d.db")
    try:
        db.execute("CREATE TABLE msg (id INTEGER PRIMARY KEY, org TEXT, body TEXT)")
        db.execute("INSERT INTO msg (org, body) VALUES ('acme', 'a1'), ('globex', 'g1')")
        fn = _messages(db)
        controls = fn.controls(debounce=0.2)
        live = controls.live.wait()
        rebinds = []
        original = live.rebind

        def counted(*args: Any, **kwargs: Any) -> None:
            rebinds.append(threading.current_thread().name)
            original(*args, **kwargs)

        live.rebind = counted  # type: ignore[method-assign]
        for value in ("globex", "acme", "globex"):  # typing fast: one rebind at the end
            controls.controls["org"].value = value
        done = threading.Event()
        live.observe(lambda change: done.set() if list(change["new"]["body"]) == ["g1"]
                     else None, names=["df"])
        assert done.wait(5), (live.inputs, live.df)
        assert rebinds == ["reactive_nb-controls-debounce"]
        controls.close()
    finally:
        db.close()
