"""Waiting on other processes a test started: a server until it answers over HTTP, a
condition until it holds. Another process offers no event to wait on, so these poll,
through one helper with one explicit bound."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from subprocess import Popen
from typing import Any


def wait_for(predicate: Callable[[], bool], timeout: float, every: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        pause.wait(every)
    return True


def wait_until_answering(url: str, proc: Popen[Any], what: str, output: Callable[[], str],
                         headers: Mapping[str, str] | None = None,
                         timeout: float = 60.0) -> None:
    """Until ``url`` answers 200; fail with ``output()`` if ``proc`` exits or the bound
    passes first."""
    request = urllib.request.Request(url, headers=dict(headers or {}))

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{output()}")
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    if not wait_for(answers, timeout):
        raise AssertionError(f"{what} did not answer {url} within {timeout:g} s:\n{output()}")
