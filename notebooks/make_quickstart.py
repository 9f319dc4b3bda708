"""Write notebooks/quickstart.ipynb from reactive_nb.ui.demo.QUICKSTART_CELLS (outputs empty).

Run from the repository root: python notebooks/make_quickstart.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from reactive_nb.ui.demo import write_quickstart  # noqa: E402

if __name__ == "__main__":
    print(write_quickstart(HERE / "quickstart.ipynb"))
