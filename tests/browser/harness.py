"""Real JupyterLab + headless Chromium for browser tests (see
shared/notes/browser-and-kernel.md for why each step is there).

    @pytest.fixture(scope="module")
    def lab(tmp_path_factory):
        with harness.start_lab(tmp_path_factory.mktemp("lab")) as lab:
            yield lab

    def test_x(lab):
        nb = lab.open(Path("my.ipynb"))      # copied into the lab's root, Run All, all ran
        nb.page.wait_for_selector(...)
        nb.assert_no_console_errors()

One JupyterLab server and one Chromium per module (~7 s); each `open` gets its own
browser page and kernel, closed by `NotebookPage.close()` or at module end. The lab runs
with isolated JUPYTER_*/IPYTHONDIR/XDG directories under the temporary folder and with
the repository root and this folder on PYTHONPATH (kernels import `reactive_nb` and the
helper modules here).

`start_voila(tmp, notebook, env=...)` does the same for a dashboard served by Voila:
`voila.open()` loads it in a new browser page (Voila runs the notebook in a fresh kernel
per page); on exit the server stops its kernels and none may be left running.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.serving import wait_for, wait_until_answering

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUTPUT = REPO / "test-output" / "browser"
REQUIRE = os.environ.get("REACTIVE_NB_REQUIRE_SERVICES") == "1"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

_ISOLATED_DIRS = {
    "JUPYTER_CONFIG_DIR": "jupyter-config",
    "JUPYTER_DATA_DIR": "jupyter-data",
    "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
    "IPYTHONDIR": "ipython",
    "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
    "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
    "XDG_CONFIG_HOME": "xdg-config",
    "XDG_CACHE_HOME": "xdg-cache",
}

# Every code cell has run and the kernel is idle; returns the error outputs, if any.
_ALL_RAN_JS = """() => {
  const nb = window.jupyterapp.shell.currentWidget;
  const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
  if (!kernel || kernel.status !== "idle") return null;
  const cells = nb.content.model.cells;
  const errors = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== "code") continue;
    if (cell.executionCount === null) return null;
    for (let j = 0; j < cell.outputs.length; j++) {
      const out = cell.outputs.get(j).toJSON();
      if (out.output_type === "error") errors.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
    }
  }
  return {errors};
}"""


def require_browser() -> str:
    """The chromium path; skips (fails when services are required) if it is missing."""
    reason = None
    chromium = shutil.which("chromium")
    if chromium is None:
        reason = "chromium is not installed (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright (Python) is not installed"
    if reason is not None:
        if REQUIRE:
            pytest.fail(f"{reason} and REACTIVE_NB_REQUIRE_SERVICES=1")
        pytest.skip(reason)
    assert chromium is not None
    return chromium


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def screenshot_path(name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT / f"{name}.png"


# Deep equality of two JSON values (key order ignored), for `wait_for_state`.
_SAME_JS = """(a, b) => {
  const same = (x, y) => x === y || (typeof x === "object" && typeof y === "object"
    && x !== null && y !== null && Array.isArray(x) === Array.isArray(y)
    && Object.keys(x).length === Object.keys(y).length
    && Object.keys(x).every((k) => same(x[k], y[k])));
  return same(a, b);
}"""


def wait_for_state(
    page: Page,
    state_js: str,
    expected: Mapping[str, Any],
    *,
    what: str,
    timeout: float = 30.0,
    explain: Callable[[], str] | None = None,
) -> None:
    """Wait until the JS function `state_js` (no argument, returns a JSON object) returns
    exactly `expected`, a specific value rather than "some change". `timeout` is a hang
    bound. On timeout: an AssertionError naming `what`, each key shown differently and
    `explain()` (e.g. the statuses the widgets went through, the kernel's view)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            f"(expected) => ({_SAME_JS})(({state_js})(), expected)",
            arg=dict(expected),
            timeout=timeout * 1000,
        )
    except PlaywrightTimeout as exc:
        shown = page.evaluate(state_js)
        diff = [f"  {k}: shows {shown.get(k)!r}, expected {v!r}"
                for k, v in expected.items() if shown.get(k) != v]
        try:
            extra = f"\n{explain()}" if explain is not None else ""
        except Exception as failed:  # the page or the kernel may be gone: keep the diff
            extra = f"\n(explain() failed: {failed!r})"
        raise AssertionError(f"{what}: not shown within {timeout:.0f} s\n"
                             + "\n".join(diff) + extra) from exc


class NotebookPage:
    """One open notebook in its own browser page, with its console errors collected."""

    def __init__(self, lab: Lab, page: Page, path: Path) -> None:
        self.lab = lab
        self.page = page
        self.path = path
        self.console_errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.console_errors.append(f"pageerror: {exc}"))

    def _on_console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.console_errors.append(f"console.error: {msg.text} ({msg.location})")

    def wait_for_kernel(self, timeout: float = 30.0) -> None:
        """Wait until the notebook's kernel really answers (Run All earlier is lost)."""
        self.page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
            " && window.jupyterapp.shell.currentWidget.sessionContext",
            timeout=timeout * 1000,
        )
        self.page.evaluate(
            """async () => {
              const ctx = window.jupyterapp.shell.currentWidget.sessionContext;
              await ctx.ready;
              await ctx.session.kernel.info;
            }"""
        )

    def run_all(self, timeout: float = 60.0) -> None:
        """Run All from the Run menu, then wait until every code cell ran without error."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        self.page.locator('li[data-command="runmenu:run-all"]').click()
        self.wait_all_ran(timeout)

    def wait_all_ran(self, timeout: float = 60.0) -> None:
        handle = self.page.wait_for_function(_ALL_RAN_JS, timeout=timeout * 1000)
        errors = handle.json_value()["errors"]
        if errors:
            raise AssertionError("notebook cells failed:\n" + "\n".join(errors))

    def start_cell(self, code: str) -> int:
        """Append a code cell with `code` and run it as the UI does (Shift+Enter's
        command), without waiting for it to finish. Returns the cell's index."""
        index: int = self.page.evaluate(
            """async (code) => {
              const app = window.jupyterapp;
              const nb = app.shell.currentWidget.content;
              nb.activeCellIndex = nb.widgets.length - 1;
              await app.commands.execute("notebook:insert-cell-below");
              nb.activeCell.model.sharedModel.setSource(code);
              app.commands.execute("notebook:run-cell");
              return nb.activeCellIndex;
            }""",
            code,
        )
        return index

    def cell_state(self, index: int) -> dict[str, Any]:
        """`execution_count` (None while queued or running) and `text` (its outputs as
        JSON text) of cell `index`. Use this, not the kernel status, to know whether a
        cell runs: with ipykernel 7 subshells, a comm message handled during a busy cell
        publishes "idle" and JupyterLab's kernel status flips to idle."""
        state: dict[str, Any] = self.page.evaluate(
            """(index) => {
              const cell = window.jupyterapp.shell.currentWidget.content.model.cells.get(index);
              const outputs = [];
              for (let j = 0; j < cell.outputs.length; j++) {
                outputs.push(JSON.stringify(cell.outputs.get(j).toJSON()));
              }
              return { execution_count: cell.executionCount ?? null, text: outputs.join("\\n") };
            }""",
            index,
        )
        return state

    def kernel_output(self, code: str, timeout: float = 10.0) -> str:
        """Run `code` in the notebook's kernel without adding a cell (for diagnostics of a
        failed wait) and return what it printed, its result and its error, as text.
        The kernel must be idle: ipykernel may hold a request while a cell runs."""
        text: str = self.page.evaluate(
            """async ([code, ms]) => {
              const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
              const future = kernel.requestExecute({ code, store_history: false });
              let out = "";
              future.onIOPub = (msg) => {
                const c = msg.content;
                if (msg.header.msg_type === "stream") out += c.text;
                else if (msg.header.msg_type === "execute_result") out += c.data["text/plain"];
                else if (msg.header.msg_type === "error") out += `${c.ename}: ${c.evalue}`;
              };
              const late = new Promise((resolve) => setTimeout(() => resolve("late"), ms));
              if (await Promise.race([future.done.then(() => "done"), late]) === "late") {
                out += `\\n(no reply within ${ms} ms)`;
              }
              return out;
            }""",
            [code, timeout * 1000],
        )
        return text

    def screenshot(self, name: str, full_page: bool = False) -> Path:
        path = screenshot_path(name)
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def assert_no_console_errors(self) -> None:
        assert not self.console_errors, "browser console errors:\n" + "\n".join(self.console_errors)

    def close(self) -> None:
        """Shut the kernel down and close the page."""
        with contextlib.suppress(Exception):
            self.page.evaluate(
                "() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()"
            )
        with contextlib.suppress(Exception):
            self.page.close()


class Lab:
    """A running JupyterLab server and a Chromium browser."""

    def __init__(self, root: Path, url: str, token: str, browser: Browser) -> None:
        self.root = root
        self.url = url
        self.token = token
        self.browser = browser
        self.pages: list[NotebookPage] = []

    def open(self, notebook: Path, *, run_all: bool = True, timeout: float = 60.0) -> NotebookPage:
        """Copy `notebook` into the lab's root, open it (fresh workspace), wait for its
        kernel, and Run All (waiting until every cell ran, failing on a cell error)."""
        target = self.root / notebook.name
        shutil.copyfile(notebook, target)
        context = self.browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(timeout * 1000)
        nb = NotebookPage(self, page, target)
        self.pages.append(nb)
        page.goto(f"{self.url}/lab/tree/{notebook.name}?reset&token={self.token}")
        nb.wait_for_kernel(timeout)
        if run_all:
            nb.run_all(timeout)
        return nb

    def api(self, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")


def server_environment(
    home: Path, *, pythonpath: tuple[Path, ...] = (), env: Mapping[str, str | None] | None = None
) -> dict[str, str]:
    """This process's environment for a Jupyter server and its kernels: `env` applied
    (None removes a variable), the JUPYTER_*/IPYTHONDIR/XDG folders created under `home`,
    and the repository root, this folder and `pythonpath` first on PYTHONPATH."""
    server_env = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            server_env.pop(name, None)
        else:
            server_env[name] = value
    for var, sub in _ISOLATED_DIRS.items():
        (home / sub).mkdir(parents=True)
        server_env[var] = str(home / sub)
    paths = [str(REPO), str(HERE), *map(str, pythonpath)]
    if server_env.get("PYTHONPATH"):
        paths.append(server_env["PYTHONPATH"])
    server_env["PYTHONPATH"] = os.pathsep.join(paths)
    return server_env


@contextlib.contextmanager
def start_lab(
    tmp: Path, *, pythonpath: tuple[Path, ...] = (), env: Mapping[str, str | None] | None = None
) -> Iterator[Lab]:
    """Start JupyterLab (root: `tmp/root`) and Chromium; stop both on exit. `env` sets
    (or, with None, removes) variables of the server's environment, which its kernels
    inherit."""
    chromium = require_browser()
    from playwright.sync_api import sync_playwright

    root = tmp / "root"
    home = tmp / "home"
    root.mkdir()
    server_env = server_environment(home, pythonpath=pythonpath, env=env)
    # No "get notified about Jupyter news?" toast over the screenshots (and no fetch).
    labconfig = home / _ISOLATED_DIRS["JUPYTER_CONFIG_DIR"] / "labconfig"
    labconfig.mkdir()
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    port, token = free_port(), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    log = tmp / "jupyterlab.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--ip=127.0.0.1",
                f"--port={port}",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={root}",
                "--ServerApp.allow_root=True",
                "--LabApp.expose_app_in_browser=True",
                "--LabApp.extension_manager=readonly",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            cwd=root,
            env=server_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    playwright: Playwright | None = None
    lab: Lab | None = None
    try:
        wait_until_answering(f"{url}/api/status", proc, "jupyter lab",
                             lambda: log.read_text()[-4000:],
                             headers={"Authorization": f"token {token}"})
        playwright = sync_playwright().start()
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        lab = Lab(root, url, token, browser)
        yield lab
    finally:
        if lab is not None:
            for nb in lab.pages:
                nb.close()
            with contextlib.suppress(Exception):
                lab.browser.close()
        if playwright is not None:
            playwright.stop()
        proc.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


# -- Voila ----------------------------------------------------------------------------------


class VoilaPage:
    """A Voila dashboard in its own browser page, with its console errors collected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console_errors: list[str] = []
        self.stubbed: list[str] = []  # offline: external stylesheets answered with nothing
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.console_errors.append(f"pageerror: {exc}"))

    def _on_console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.console_errors.append(f"console.error: {msg.text} ({msg.location})")

    def screenshot(self, name: str, full_page: bool = False) -> Path:
        path = screenshot_path(name)
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def assert_no_console_errors(self) -> None:
        assert not self.console_errors, "browser console errors:\n" + "\n".join(self.console_errors)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.page.context.close()


class Voila:
    """A running Voila server (one notebook) and a Chromium browser."""

    def __init__(self, url: str, token: str, browser: Browser, proc: subprocess.Popen[bytes],
                 log: Path) -> None:
        self.url = url
        self.token = token
        self.browser = browser
        self.proc = proc
        self.log = log
        self.pages: list[VoilaPage] = []

    def open(self, *, timeout: float = 60.0) -> VoilaPage:
        """Open the dashboard in a new browser context: Voila starts a kernel and runs the
        notebook while it serves the page; returns once the page has loaded.

        Voila's "lab" template links Font Awesome from a CDN, unreachable in offline CI:
        external stylesheets get an empty answer (listed in `stubbed`); any other external
        request is aborted, so it shows as a console error."""
        context = self.browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(timeout * 1000)
        dashboard = VoilaPage(page)
        self.pages.append(dashboard)

        def offline(route: Any) -> None:
            url = route.request.url
            if urllib.parse.urlsplit(url).path.endswith(".css"):
                dashboard.stubbed.append(url)
                route.fulfill(status=200, content_type="text/css", body="")
            else:
                route.abort()

        local = urllib.parse.urlsplit(self.url).netloc
        context.route(lambda url: urllib.parse.urlsplit(url).netloc != local, offline)
        page.goto(f"{self.url}/?token={self.token}")
        return dashboard


def _live_children(pid: int) -> list[int]:
    """Pids of the running (not zombie) children of `pid`, from /proc (Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError, ValueError):
            continue
        if int(ppid) == pid and state != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@contextlib.contextmanager
def start_voila(
    tmp: Path,
    notebook: Path,
    *,
    pythonpath: tuple[Path, ...] = (),
    env: Mapping[str, str | None] | None = None,
) -> Iterator[Voila]:
    """Serve `notebook` (copied to `tmp/root`) with Voila on a free port behind a token,
    and start Chromium; stop both on exit. The server's environment is
    `server_environment` (isolated Jupyter folders, `env` applied), which its kernels
    inherit. On exit Voila gets SIGTERM (it shuts its kernels down); a kernel process
    still running afterwards is killed and reported as an error."""
    chromium = require_browser()
    from playwright.sync_api import sync_playwright

    root = tmp / "root"
    root.mkdir()
    target = root / notebook.name
    shutil.copyfile(notebook, target)
    server_env = server_environment(tmp / "home", pythonpath=pythonpath, env=env)
    port, token = free_port(), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    log = tmp / "voila.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voila",
                str(target),
                "--no-browser",
                f"--port={port}",
                "--Voila.port_retries=0",
                "--Voila.ip=127.0.0.1",
                f"--token={token}",
                f"--Voila.connection_dir_root={tmp}",
                "--show_tracebacks=True",
            ],
            cwd=root,
            env=server_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    playwright: Playwright | None = None
    voila: Voila | None = None
    try:
        wait_until_answering(f"{url}/voila/static/voila.js", proc, "voila",
                             lambda: log.read_text()[-4000:])
        playwright = sync_playwright().start()
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        voila = Voila(url, token, browser, proc, log)
        yield voila
    finally:
        if voila is not None:
            for page in voila.pages:
                page.close()
            with contextlib.suppress(Exception):
                voila.browser.close()
        if playwright is not None:
            playwright.stop()
        kernels = _live_children(proc.pid)
        proc.terminate()  # Voila shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        wait_for(lambda: not any(map(_alive, kernels)), 10.0)  # Voila's kernels exiting
        leaked = [pid for pid in kernels if _alive(pid)]
        for pid in leaked:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    if leaked:
        raise RuntimeError(f"voila left kernel processes running (killed): {leaked}")
