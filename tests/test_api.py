"""The public surface: exactly what __all__ says, cheap to import, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import reactive_nb as rnb

PUBLIC = {
    "CaptureError", "Change", "ClosedError", "ConfigError", "InputError", "LiveQuery",
    "ReactiveDB", "ReactiveError", "ReactiveFunction", "RelationError", "TenantAccessDenied",
    "TenantNotFound", "__version__", "connect", "load_ipython_extension",
    "unload_ipython_extension",
}


def test_all_is_exactly_the_public_surface() -> None:
    """``__all__`` is the explicit list, and the module namespace exports nothing else
    (``dir()`` is not used: the package's ``__dir__`` returns ``__all__``)."""
    import types

    assert set(rnb.__all__) == PUBLIC
    for name in rnb.__all__:
        assert getattr(rnb, name) is not None  # lazy names resolve
    exported = {name for name, value in vars(rnb).items()
                if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert exported | {"__version__"} == PUBLIC


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
