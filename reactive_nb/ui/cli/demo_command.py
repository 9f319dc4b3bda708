"""``reactive-nb demo``: the demo database and its writer, shown in JupyterLab, in the
tenant dashboard served by Voila, or in the terminal (``--headless``, `headless.py`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from reactive_nb.errors import one_line
from reactive_nb.ui.cli.common import CliError, Subcommands, say
from reactive_nb.ui.cli.headless import run_headless


def add_parser(sub: Subcommands) -> None:
    """The ``demo`` subcommand and its options."""
    demo = sub.add_parser("demo", help="demo database + writer; JupyterLab, Voila or "
                          "--headless")
    demo.add_argument("--headless", action="store_true",
                      help="print what each live update changed in the terminal instead of "
                      "opening JupyterLab")
    demo.add_argument("--voila", action="store_true",
                      help="serve the tenant dashboard with Voila instead of JupyterLab")
    demo.add_argument("--seconds", type=float, default=10.0,
                      help="how long --headless runs, in seconds (default 10)")
    demo.add_argument("--db", help="SQLite file of the demo (default ./demo.db)")
    demo.add_argument("--url", help="use this database URL instead of a SQLite file")
    demo.add_argument("--redis", help="Redis URL: shared cache, versions and change bus")
    demo.add_argument("--create", metavar="PATH",
                      help="only create the demo SQLite database at PATH (with triggers), "
                      "then exit")
    demo.add_argument("--folder", default="reactive-nb-demo",
                      help="working folder the demo notebooks are copied to "
                      "(default ./reactive-nb-demo)")
    demo.add_argument("--port", type=int, help="port of JupyterLab or Voila")
    demo.add_argument("--no-browser", action="store_true",
                      help="do not open a browser (JupyterLab, Voila)")
    demo.add_argument("--interval", type=float, default=0.25, help=argparse.SUPPRESS)
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Prepare the demo database, start the writer, and show it as the options say."""
    from reactive_nb.ui import demo

    if args.seconds <= 0:
        raise CliError("--seconds must be positive")
    if args.url and args.db:
        raise CliError("give --db PATH or --url DBURL, not both")
    if args.create:
        return create(args.create)
    if args.headless and args.voila:
        raise CliError("give --headless or --voila, not both")
    url = args.url or f"sqlite:///{Path(args.db or 'demo.db').resolve()}"
    try:
        created = demo.ensure_demo(url)
        if not args.headless and not args.redis:
            install_demo_triggers(url)  # the notebook's kernel hears the writer through them
    except Exception as exc:
        raise CliError(f"cannot prepare the demo database: {one_line(exc)}") from None
    rows = demo.count(url)
    say(f"demo database: {shown(url)} ({'created' if created else 'existing'}, "
        f"{len(demo.ORGANIZATIONS)} organizations, {rows:,} messages)")
    from reactive_nb.db import connect

    try:
        # This process shows nothing but its own writes in --headless mode, and nothing at
        # all beside JupyterLab: capturing its own writes is enough.
        db = connect(url, redis=args.redis, capture="local")
    except Exception as exc:
        raise CliError(f"cannot connect: {one_line(exc)}") from None
    writer = demo.DemoWriter(db, interval=args.interval)
    try:
        if args.headless:
            return run_headless(db, writer, args.seconds)
        return serve(url, args, writer)
    finally:
        writer.close()
        db.close()


def create(path: str) -> int:
    """``demo --create PATH``: the demo database at PATH (with triggers), then exit."""
    from reactive_nb.ui import demo

    target = Path(path).resolve()
    url = f"sqlite:///{target}"
    try:
        created = demo.ensure_demo(url)
        install_demo_triggers(url)
    except Exception as exc:
        raise CliError(f"cannot create the demo database: {one_line(exc)}") from None
    say(f"demo database: {target} ({'created' if created else 'existing'}, "
        f"{len(demo.ORGANIZATIONS)} organizations, {demo.count(url):,} messages)")
    return 0


def shown(url: str) -> str:
    """A URL fit to print: the password masked."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def install_demo_triggers(url: str) -> None:
    """Triggers on the demo tables, so a notebook kernel sees the writer's writes (without
    Redis, they are how another process hears of a write)."""
    from reactive_nb.db import connect
    from reactive_nb.ui import demo

    db = connect(url, capture="local")
    try:
        if db.engine.dialect.name in ("sqlite", "postgresql"):
            db.install_triggers(demo.TABLES)
    finally:
        db.close()


def demo_folder(folder: str | Path) -> dict[str, Path]:
    """The demo notebooks in ``folder`` (created): each written unless already there, so a
    user's edits stay theirs and tracked files are never touched. Returns name -> path."""
    from reactive_nb.ui import demo

    target = Path(folder).resolve()
    target.mkdir(parents=True, exist_ok=True)
    found = {}
    for name, write in demo.DEMO_NOTEBOOKS.items():
        path = target / name
        if not path.exists():
            write(path)
        found[name] = path
    return found


def serve(url: str, args: argparse.Namespace, writer: Any) -> int:
    """Serve the demo notebooks (JupyterLab, or the tenant dashboard with Voila) from the
    working folder while the writer writes."""
    import importlib.util

    app = "voila" if args.voila else "jupyterlab"
    if importlib.util.find_spec(app) is None:
        extra = "dashboard" if args.voila else "notebook"
        raise CliError(f"{app} is not installed: pip install 'reactive_nb[{extra}]', "
                       "or run reactive-nb demo --headless")
    notebooks = demo_folder(args.folder)
    notebook = notebooks["tenant_dashboard.ipynb" if args.voila else "quickstart.ipynb"]
    say(f"notebooks: {notebook.parent} (your copies: edit freely)")
    env = dict(os.environ, REACTIVE_NB_URL=url)
    if args.redis:
        env["REACTIVE_NB_REDIS"] = args.redis
    writer.start()
    command = [sys.executable, "-m", app, str(notebook)]
    if args.port:
        command.append(f"--port={args.port}")
    if args.no_browser:
        command.append("--no-browser")
    if args.voila:
        say(f"writer started ({1 / writer.interval:.0f} writes/s); serving {notebook.name} "
            f"with Voila (REACTIVE_NB_URL={shown(url)}; Ctrl-C to stop)")
    else:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")  # containers often run as root; JupyterLab refuses
        say(f"writer started ({1 / writer.interval:.0f} writes/s); opening {notebook} in "
            "JupyterLab (Ctrl-C to stop)")
    process = subprocess.Popen(command, env=env, cwd=notebook.parent)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the server and the writer too
    try:
        process.wait()
    except KeyboardInterrupt:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    say(f"writer stopped after {writer.writes} writes")
    if process.returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise CliError(f"{app} exited with status {process.returncode}")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
