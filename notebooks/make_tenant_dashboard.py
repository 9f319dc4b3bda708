"""Write notebooks/tenant_dashboard.ipynb, the live tenant dashboard (outputs empty).

The cells live in ``reactive_nb.ui.demo.TENANT_DASHBOARD_CELLS`` (``reactive-nb demo``
writes the same notebook into its working folder); tests check the file is current.

Run from the repository root: python notebooks/make_tenant_dashboard.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "tenant_dashboard.ipynb"

if __name__ == "__main__":
    from reactive_nb.ui.demo import write_tenant_dashboard

    print(write_tenant_dashboard(NOTEBOOK))
