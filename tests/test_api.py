"""The public surface: exactly what __all__ says, cheap to import, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import reactive_nb as rnb


def test_all_is_exactly_the_public_surface() -> None:
    public = {name for name in dir(rnb) if not name.startswith("_")} | {"__version__"}
    assert set(rnb.__all__) == public
    for name in rnb.__all__:
        assert getattr(rnb, name) is not None


def test_import_is_light() -> None:
    code = ("import sys, json; import reactive_nb; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pandas', 'sqlalchemy', 'redis', 'pyarrow', 'sqlglot', 'pydantic', "
            "'traitlets', 'jupyterlab', 'IPython'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert json.loads(out.stdout) == []


def test_errors_are_one_line() -> None:
    errors = [
        rnb.InputError("agents", ["limit: bad", "org: missing"]),
        rnb.RelationError("agnet", ["agent", "message"]),
        rnb.TenantNotFound("acm", ["acme", "globex"]),
        rnb.CaptureError("agent", "permission denied for table agent"),
    ]
    for error in errors:
        assert "\n" not in str(error)
    assert str(errors[1]) == "unknown table 'agnet' in relations (did you mean 'agent'?)"
    assert str(errors[2]) == "unknown tenant 'acm' (did you mean 'acme'?)"
