"""``python -m reactive_nb.ui.cli``: the ``reactive-nb`` command without its script."""

from __future__ import annotations

import sys

from reactive_nb.ui.cli import main

sys.exit(main())
