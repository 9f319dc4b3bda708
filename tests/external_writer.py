"""Writers that are not reactive_nb: another process with plain psycopg."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy.engine import make_url


def psycopg_write(pg_url: str, sql: str) -> None:
    """Write from another process with plain psycopg (no reactive_nb there)."""
    url = make_url(pg_url)
    script = (f"import psycopg\nwith psycopg.connect(host='127.0.0.1', user='postgres', "
              f"dbname={url.database!r}) as c:\n    c.execute({sql!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
