"""The static HTML snapshot every widget adds to its display, for renderers without a
widget manager: nbconvert uses the widget view only when the widget state was saved with
the notebook, and GitHub never does, so both show the ``text/html``. Inline styles only:
GitHub strips classes and CSS."""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable, Sequence
from typing import Any

from reactive_nb.ui.widgets import paging
from reactive_nb.ui.widgets.messages import Cell

STATIC_ROWS = 10
"""Rows of the static HTML snapshot shown where no widget can run (nbconvert, GitHub)."""


def with_static_html(bundle: Any, static_html: Callable[[], str]) -> Any:
    """A widget's mime bundle (or ``(data, metadata)``) with ``static_html()`` added as
    its ``text/html``; a snapshot that fails leaves the bundle as it was."""
    data = bundle[0] if isinstance(bundle, tuple) else bundle  # (data, metadata)
    if isinstance(data, dict):
        with contextlib.suppress(Exception):  # a display must not fail on a snapshot
            data["text/html"] = static_html()
    return bundle


def rows_html(rows: Sequence[Sequence[Cell]]) -> str:
    """Formatted rows (`paging.format_page`) as ``<tr>`` elements."""
    return "".join(
        "<tr>" + "".join(f"<td>{html.escape(paging.display_text(v))}</td>" for v in row)
        + "</tr>" for row in rows)


def frame_rows_html(df: Any, columns: Sequence[str] | None = None,
                    rows: int = STATIC_ROWS) -> tuple[list[str], str, int, int]:
    """(column names, ``<tr>`` rows, rows shown, rows in all) of the first `rows` rows
    of `df` (only `columns` when given and present), for `static_card`."""
    if df is None:
        return [], "", 0, 0
    if columns is not None:
        picked = [j for j, c in enumerate(df.columns) if str(c) in set(columns)]
        df = df.iloc[:, picked]
    positions = slice(0, min(rows, len(df)))
    body = rows_html(paging.format_page(df, positions))
    return [str(c) for c in df.columns], body, min(rows, len(df)), len(df)


def static_card(name: str, status: str, error: str | None, updated_at: str | None,
                summary: str, columns: Sequence[str], body: str, *, shown: int,
                total: int) -> str:
    """The static snapshot's HTML (inline styles only: GitHub strips classes and CSS)."""
    esc = html.escape
    when = f"updated at {esc(updated_at)}" if updated_at else "not updated yet"
    problem = f" &middot; {esc(error)}" if status == "error" and error else ""
    head = "".join(f"<th style=\"text-align:left\">{esc(c)}</th>" for c in columns)
    more = (f"<p><small>first {shown:,} of {total:,} rows; a static snapshot: run the "
            "notebook for the live table</small></p>") if total > shown else ""
    table = (f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
             if columns else "")
    return (f"<div class=\"rnb-static\" data-status=\"{esc(status)}\">"
            f"<p><strong>{esc(name)}</strong> &middot; {esc(summary)} &middot; "
            f"<code>{esc(status)}</code>{problem} &middot; {when}</p>{table}{more}</div>")
