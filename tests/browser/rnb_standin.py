"""Kernel-side helpers of the widget browser test (imported by widget_demo.ipynb).

`StandinSource` has a LiveQuery's traits over a DataFrame, without a database.
`start_control` lets the test process change a source from outside, without executing a
cell: a thread in the kernel accepts commands on a local authenticated
`multiprocessing.connection` socket whose address it writes to `control.json` in the
kernel's working directory (the lab's root, where the notebook is).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import os
import threading
import time
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import traitlets

logger = logging.getLogger(__name__)

CONTROL_FILE = "control.json"


class StandinSource(traitlets.HasTraits):
    """The traits a LiveTable reads from a LiveQuery, plus a record of visibility reports."""

    df = traitlets.Any(None, allow_none=True)
    status = traitlets.Unicode("loading")
    error = traitlets.Unicode(None, allow_none=True)
    updated_at = traitlets.Any(None, allow_none=True)
    runs = traitlets.Int(0)

    def __init__(
        self, name: str, df: pd.DataFrame, primary_key: tuple[str, ...] | None = None
    ) -> None:
        super().__init__()
        self.name = name
        self.primary_key = primary_key
        self.reports: list[tuple[str, bool | None]] = []
        self._reported = threading.Condition()
        self.df = df
        self.status = "fresh"
        self.updated_at = dt.datetime.now(dt.timezone.utc)
        self.runs = 1

    def set_visible(self, token: str, visible: bool | None) -> None:
        with self._reported:
            self.reports.append((token, visible))
            self._reported.notify_all()

    def wait_report(self, value: bool | None, timeout: float) -> bool:
        """Wait until some widget's latest report is `value`."""

        def found() -> bool:
            latest = dict(self.reports)
            return value in latest.values()

        with self._reported:
            return self._reported.wait_for(found, timeout)

    def refresh(self, df: pd.DataFrame, delay: float) -> float:
        """Like a scheduler refresh: `refreshing`, the query runs for `delay` s, then the
        new frame and `fresh`. Returns the time (epoch s) the new frame was committed."""
        self.status = "refreshing"
        threading.Event().wait(delay)
        committed = time.time()
        self.df = df
        self.updated_at = dt.datetime.now(dt.timezone.utc)
        self.runs += 1
        self.status = "fresh"
        return committed


def agents_frame(n: int = 40) -> pd.DataFrame:
    """A small table with the awkward types: dates, decimals, nulls, long text."""
    ids = np.arange(n, 0, -1)
    return pd.DataFrame(
        {
            "id": ids,
            "name": [f"agent {i}" for i in ids],
            "role": np.where(ids % 3 == 0, "admin", "member"),
            "created_at": pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(ids, unit="h"),
            "balance": [decimal.Decimal(f"{i}.50") for i in ids],
            "note": [None if i % 4 == 0 else "lorem ipsum " * (i % 9) for i in ids],
        }
    )


def big_frame(n: int = 1_000_000) -> pd.DataFrame:
    """n rows x 10 columns; `id` equals the row position."""
    rng = np.random.default_rng(7)
    ids = np.arange(n)
    return pd.DataFrame(
        {
            "id": ids,
            "label": pd.Series(ids).astype(str),
            "a": rng.random(n),
            "b": rng.integers(0, 1000, n),
            "c": rng.standard_normal(n),
            "d": ids % 7 == 0,
            "e": rng.integers(0, 10, n),
            "f": rng.random(n),
            "g": ids * 2,
            "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(ids, unit="s"),
        }
    )


def insert_row(df: pd.DataFrame, new_id: int) -> pd.DataFrame:
    """`df` with one more agent on top (as `ORDER BY id DESC` would return it)."""
    row = agents_frame(1).assign(id=[new_id], name=[f"agent {new_id}"])
    return pd.concat([row, df], ignore_index=True)


class Control:
    """Serves the test's commands in a daemon thread of the kernel."""

    def __init__(self, sources: dict[str, StandinSource], directory: Path) -> None:
        self.sources = sources
        key = os.urandom(16)
        self._listener = Listener(("127.0.0.1", 0), authkey=key)
        host, port = self._listener.address
        (directory / CONTROL_FILE).write_text(
            json.dumps({"host": host, "port": port, "authkey": key.hex()})
        )
        self._thread = threading.Thread(target=self._serve, name="rnb-test-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except OSError:
                return
            threading.Thread(
                target=self._handle, args=(conn,), name="rnb-test-control-conn", daemon=True
            ).start()

    def _handle(self, conn: Connection) -> None:
        with conn:
            while True:
                try:
                    command = conn.recv()
                except (EOFError, OSError):
                    return
                try:
                    conn.send({"ok": True, **self._run(command)})
                except Exception as exc:
                    logger.exception("control command %r failed", command)
                    conn.send({"ok": False, "error": repr(exc)})

    def _run(self, command: dict[str, Any]) -> dict[str, Any]:
        source = self.sources[command["source"]]
        if command["op"] == "insert":
            new = insert_row(source.df, int(command["id"]))
            return {"committed": source.refresh(new, float(command.get("delay", 0.3)))}
        if command["op"] == "wait_report":
            found = source.wait_report(command["value"], float(command.get("timeout", 5.0)))
            return {"found": found, "reports": list(source.reports)}
        raise ValueError(f"unknown op {command['op']!r}")


def start_control(sources: dict[str, StandinSource]) -> Control:
    return Control(sources, Path.cwd())
