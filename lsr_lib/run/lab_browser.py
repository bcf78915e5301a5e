"""A notebook run the way a user walks it: JupyterLab in headless Chromium, driven through its UI (issue 28).

:func:`jupyter_lab` starts ``jupyter lab`` from this interpreter on a free port with a token, rooted at a
folder, with throw-away settings (no news pop-up, no autosave, every cell in the page) and workspaces in a
temporary folder; :func:`headless_chromium` starts Chromium through selenium and the Debian
``chromium-driver``. :class:`LabPage` opens a notebook by its ``/lab/tree/...`` URL, picks *Run > Run All
Cells* from the menu bar, waits until the kernel is idle and no cell is queued, and reads every code cell's
prompt and error outputs from the page, as a user would see them. It never saves: the notebook on disk is
left as it was. ``tests/test_lab_browser.py`` and ``scripts/lab_screenshots.py`` use it.

Only the processes started here are stopped (the server by its id; the server shuts its kernels down).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# Per plugin, the user settings that make a scripted session repeatable: no news / update toasts over the
# page, no autosave (the notebook on disk is never written), all cells in the page (no virtual scrolling).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}
EXECUTED = re.compile(r"^\[\d+\]:$")
ERROR_OUTPUTS = ".jp-OutputArea-output[data-mime-type*=error], .jp-RenderedText[data-mime-type*=error]"
STDOUT_OUTPUTS = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stdout"]'
STDERR_OUTPUTS = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
# The widget of the main area's current tab (JupyterLab keeps other open documents in the page, hidden).
CURRENT = (
    "const tab = document.querySelector('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current');"
    "const current = tab ? document.getElementById(tab.dataset.id) : null;"
)


def browser_missing() -> Optional[str]:
    """Why a headless-Chromium session cannot start here (one line), or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not any(shutil.which(n) for n in CHROMIUM_NAMES):
        return "no Chromium (apt-get install -y chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "no chromedriver (apt-get install -y chromium-driver)"
    return None


def lab_missing(python: str = sys.executable) -> Optional[str]:
    """Why ``jupyter lab`` cannot start from ``python`` (one line), or None when it can."""
    found = subprocess.run([python, "-c", "import jupyterlab"], capture_output=True).returncode == 0
    return None if found else f"jupyterlab is not installed for {python} (pip install -e '.[lab]')"


def kernel_missing(notebook: Path) -> Optional[str]:
    """Why the kernel a notebook's metadata names is not installed for this interpreter's Jupyter (one line), or
    None: without it, JupyterLab asks the user to choose one."""
    from jupyter_client.kernelspec import KernelSpecManager

    name = json.loads(Path(notebook).read_text())["metadata"].get("kernelspec", {}).get("name")
    if name and name not in KernelSpecManager().find_kernel_specs():
        return f"{Path(notebook).name} names the kernel {name!r}, which is not installed (make setup)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    """A running JupyterLab: its base URL, token and log."""

    url: str
    token: str
    root: Path
    log: Path
    process: subprocess.Popen = field(repr=False)

    def page_url(self, path: str = "lab") -> str:
        """``<url>/<path>`` with the token (``lab/tree/notebooks/03_...ipynb`` opens that notebook)."""
        return f"{self.url}/{path.lstrip('/')}?token={self.token}"

    def log_tail(self, n: int = 30) -> str:
        """The last ``n`` lines of the server's log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def write_settings(folder: Path, settings: Mapping[str, dict] = LAB_SETTINGS) -> None:
    """JupyterLab user settings files (``<plugin>.jupyterlab-settings``) under ``folder``."""
    for plugin, values in settings.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@contextmanager
def jupyter_lab(
    root: Path,
    env: Optional[Mapping[str, str]] = None,
    extra_args: Sequence[str] = (),
    python: str = sys.executable,
    start_timeout_s: float = 180,
) -> Iterator[LabServer]:
    """``jupyter lab`` rooted at ``root`` (headless, token, ``--allow-root``, then ``extra_args``); ``env`` is added to
    its environment."""
    port, token = free_port(), secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="lsr-lab-") as tmp:
        tmp = Path(tmp)
        write_settings(tmp / "settings")
        log = tmp / "lab.log"
        cmd = [
            python, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={Path(root).resolve()}", f"--LabApp.user_settings_dir={tmp / 'settings'}",
            f"--LabApp.workspaces_dir={tmp / 'workspaces'}", "--LabApp.expose_app_in_browser=True",
            f"--FileCheckpoints.root_dir={tmp / 'checkpoints'}", *extra_args,
        ]  # fmt: skip
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        server = LabServer(f"http://127.0.0.1:{port}", token, Path(root), log, proc)
        try:
            _wait_for_server(server, start_timeout_s)
            yield server
        finally:
            proc.terminate()  # the server shuts its kernels down on SIGTERM
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _wait_for_server(server: LabServer, timeout_s: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if server.process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with code {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.page_url("api/status"), timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer within {timeout_s:.0f} s:\n{server.log_tail()}")


@contextmanager
def headless_chromium(width: int = 1400, height: int = 900):
    """A selenium Chrome driver on the system's Chromium and chromedriver, headless, ``width`` x ``height``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    why = browser_missing()
    if why:
        raise RuntimeError(why)
    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n))
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class RunReport:
    """What the page shows after a run: one prompt per code cell (``[3]:``), the error, stderr and stdout outputs."""

    prompts: list[str]
    errors: list[str]
    stderr: list[str]
    stdout: list[str]

    @property
    def unexecuted(self) -> list[int]:
        """Indices (among the code cells) of the cells without an execution count."""
        return [i for i, p in enumerate(self.prompts) if not EXECUTED.match(p)]


def code_cells(notebook: Path) -> int:
    """How many code cells a notebook file has."""
    return sum(c["cell_type"] == "code" for c in json.loads(Path(notebook).read_text())["cells"])


class LabPage:
    """One JupyterLab page in a selenium driver."""

    def __init__(self, driver, server: LabServer) -> None:
        self.driver, self.server = driver, server

    def js(self, script: str, *args):
        """Run JavaScript in the page (``return ...`` gives a value back)."""
        return self.driver.execute_script(script, *args)

    def dialog(self) -> Optional[str]:
        """The text of the dialog over the page (a kernel to choose, an error), or None."""
        return self.js("const d = document.querySelector('.jp-Dialog'); return d ? d.innerText.trim() : null;")

    def wait_for(self, what: str, condition, timeout_s: float, poll_s: float = 0.5):
        """Poll ``condition()`` until it is truthy; RuntimeError when a dialog asks the user something, TimeoutError
        naming ``what`` (and the server log) after ``timeout_s``."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            asked = self.dialog()
            if asked:
                raise RuntimeError(f"while waiting for {what}, JupyterLab shows a dialog: {' | '.join(asked.split())}")
            value = condition()
            if value:
                return value
            time.sleep(poll_s)
        raise TimeoutError(f"waited {timeout_s:.0f} s for {what}; server log:\n{self.server.log_tail(15)}")

    def open(self, notebook: str, timeout_s: float = 180) -> None:
        """Open ``notebook`` (a path from the server's root) by its ``/lab/tree/`` URL; wait until the page shows all
        its code cells and its kernel is idle."""
        self.driver.get(self.server.page_url(f"lab/tree/{notebook}"))
        n = code_cells(self.server.root / notebook)
        shown = CURRENT + "return current ? current.querySelectorAll('.jp-CodeCell').length : 0;"
        ready = lambda: self.kernel_status() == "idle" and self.js(shown) == n
        self.wait_for(f"the notebook's {n} code cells and an idle kernel", ready, timeout_s)

    def kernel_status(self) -> Optional[str]:
        """The toolbar's kernel indicator: ``idle``, ``busy``, ... (None before the notebook is shown)."""
        return self.js(
            CURRENT + "const e = current && current.querySelector('.jp-Notebook-ExecutionIndicator');"
            "return e ? e.getAttribute('data-status') : null;"
        )

    def menu(self, top: str, item: str) -> None:
        """Click ``top`` in the menu bar, then ``item`` in the menu it opens."""
        from selenium.webdriver.common.by import By

        self.driver.find_element(
            By.XPATH, f"//li[contains(@class,'lm-MenuBar-item')][normalize-space()='{top}']"
        ).click()
        label = f"div[contains(@class,'lm-Menu-itemLabel')][normalize-space()='{item}']"
        entry = f"//li[contains(@class,'lm-Menu-item')][.//{label}]"
        self.wait_for(f"the menu item {top} > {item}", lambda: self.driver.find_elements(By.XPATH, entry), 10)
        self.driver.find_element(By.XPATH, entry).click()

    def report(self) -> RunReport:
        """Every code cell's prompt as the page shows it, the error outputs (the notebook model's ``error`` outputs,
        ``ename: evalue``, and any output rendered with an error MIME type), and the stderr outputs."""
        state = self.js(
            CURRENT + "if (!current) return null;"
            "const text = s => Array.from(current.querySelectorAll(s)).map(e => e.innerText.trim());"
            "const panel = window.jupyterapp"
            " && Array.from(jupyterapp.shell.widgets('main')).find(w => w.id === current.id);"
            "const errors = [];"
            "const cells = panel && panel.content && panel.content.model ? panel.content.model.cells : null;"
            "for (let i = 0; cells && i < cells.length; i++) { const c = cells.get(i); if (c.type !== 'code') continue;"
            "  for (let j = 0; j < c.outputs.length; j++) { const o = c.outputs.get(j).toJSON();"
            "    if (o.output_type === 'error') errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`); } }"
            "return {prompts: text('.jp-CodeCell .jp-InputPrompt'), errors: errors.concat(text(arguments[0])),"
            " stderr: text(arguments[1]), stdout: text(arguments[2]), model: !!cells};",
            ERROR_OUTPUTS,
            STDERR_OUTPUTS,
            STDOUT_OUTPUTS,
        )
        if not state or not state["prompts"]:
            raise RuntimeError("no notebook with code cells is open in the page")
        if not state["model"]:
            raise RuntimeError(
                "the notebook model is not reachable (jupyter lab without --LabApp.expose_app_in_browser)"
            )
        return RunReport(state["prompts"], list(dict.fromkeys(state["errors"])), state["stderr"], state["stdout"])

    def run_all(self, timeout_s: float = 1800) -> RunReport:
        """*Run > Run All Cells*; wait until the kernel is idle and no cell is queued; the page's :class:`RunReport`."""
        self.menu("Run", "Run All Cells")
        seen_busy = False

        def finished() -> Optional[RunReport]:
            nonlocal seen_busy
            r, status = self.report(), self.kernel_status()
            queued = any(p == "[*]:" for p in r.prompts)
            seen_busy = seen_busy or queued or status == "busy"
            return r if status == "idle" and not queued and (seen_busy or not r.unexecuted) else None

        self.wait_for("Run All Cells to finish", finished, timeout_s, poll_s=1)
        time.sleep(1)  # between two cells the kernel is briefly idle: confirm once more
        return self.wait_for("Run All Cells to finish", finished, timeout_s, poll_s=1)
