"""Which tables a SQL string reads and writes, with sqlglot.

Capture uses ``writes`` to know what a statement invalidated; dependency inference uses
``reads`` to know what a reactive function's SELECTs depend on. The rules, and the places
where sqlglot's behaviour forced a choice, are documented in
:mod:`reactive_nb.model.sql.statements` (:func:`analyze`); ``lexing`` splits statements
and classifies them by their first keyword; ``tables`` extracts the tables of a parsed
statement; ``fastpath`` answers :func:`written_tables` for the common single statements
without sqlglot.
"""

from __future__ import annotations

from reactive_nb.model.sql.fastpath import written_tables
from reactive_nb.model.sql.statements import SqlAnalysis, analyze, sqlglot_dialect

__all__ = ["SqlAnalysis", "analyze", "sqlglot_dialect", "written_tables"]
