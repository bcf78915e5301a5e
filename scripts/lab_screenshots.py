"""Screenshots of JupyterLab as a user sees it (issue 28): the landing page and the stage-06 explorer's Compare tab.

    .venv/bin/python scripts/lab_screenshots.py                  # profile: default when its stage 02 exists, else smoke
    .venv/bin/python scripts/lab_screenshots.py --profile smoke --query "a smiling cat"

Writes ``figures/lab/landing_<profile>.png`` (notebooks/00_start_here.ipynb, the page ``make lab`` opens, after Run
All) and ``figures/lab/explorer_<profile>.png`` (notebook 06 with ``interactive = True``: Run All, the Compare tab,
``--query`` typed into its box + Enter). Both come from a real JupyterLab in headless Chromium, driven through its
menus by ``lsr_lib.run.lab_browser`` like ``tests/test_lab_browser.py``; the images are palette PNGs under 300 KB.
Nothing is saved into the notebooks: notebook 06 runs from a copy with ``interactive = True`` under
``runs/<profile>/lab_screenshots/`` (gitignored). Needs stages 01-02 (05 for M1-M4) of the profile, Chromium and
chromedriver (``apt-get install -y chromium chromium-driver``).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from PIL import Image

from lsr_lib.artifacts import stage_inputs
from lsr_lib.config.profiles import REPO_ROOT, load_config
from lsr_lib.run.lab_browser import LabPage, browser_missing, headless_chromium, jupyter_lab

LANDING = "notebooks/00_start_here.ipynb"
EXPLORER = "notebooks/06_explore_sparse_vectors.ipynb"
MAX_BYTES = 300_000
VISIBLE_TAB = ".widget-tab > .widget-tab-contents > :not(.lm-mod-hidden):not(.p-mod-hidden)"


def explorer_ready(profile: str) -> str | None:
    """Why notebook 06 cannot run on ``profile`` here (its inputs: stages 01-02), or None."""
    try:
        stage_inputs(load_config(profile), "06_explore_sparse_vectors")
    except FileNotFoundError as err:
        return str(err).splitlines()[0]
    return None


def save_small_png(png: bytes, path: Path, max_bytes: int = MAX_BYTES) -> int:
    """Write a screenshot as a palette PNG (fewer colours, then smaller, until under ``max_bytes``); its size."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    for colors, scale in ((256, 1.0), (128, 1.0), (64, 1.0), (64, 0.8), (48, 0.65)):
        small = img if scale == 1.0 else img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS)
        buf = io.BytesIO()
        small.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
        if buf.tell() < max_bytes:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.tell()


def prepare_explorer(profile: str) -> str:
    """A copy of notebook 06 with ``interactive = True`` under runs/<profile>/lab_screenshots/ (papermill
    --prepare-only: parameters injected, nothing run); its path from the repository root."""
    import papermill

    out = REPO_ROOT / "runs" / profile / "lab_screenshots" / Path(EXPLORER).name
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"profile": profile, "interactive": True, "progress": False}
    papermill.execute_notebook(str(REPO_ROOT / EXPLORER), str(out), parameters=params, prepare_only=True)
    return str(out.relative_to(REPO_ROOT))


def run_clean(page: LabPage, path: str) -> None:
    """Open ``path``, Run All, and fail on any error output or unexecuted cell."""
    page.open(path)
    report = page.run_all(timeout_s=1800)
    if report.errors or report.unexecuted:
        raise SystemExit(f"{path}: errors {report.errors}, unexecuted cells {report.unexecuted}")


def compare_view(page: LabPage, query: str, timeout_s: float = 300) -> None:
    """Click the explorer's Compare tab, type ``query`` + Enter into its box, wait until the view is redrawn."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page.js("document.querySelector('.widget-tab').scrollIntoView({block: 'start'});")
    tabs = page.driver.find_elements(By.CSS_SELECTOR, ".widget-tab .lm-TabBar-tab")
    next(t for t in tabs if t.text.strip() == "Compare").click()
    panel = page.wait_for("the Compare tab", lambda: page.driver.find_elements(By.CSS_SELECTOR, VISIBLE_TAB), 30)[0]
    view = lambda: panel.find_element(By.CSS_SELECTOR, ".widget-html-content").get_attribute("innerHTML")
    before = view()
    box = panel.find_element(By.CSS_SELECTOR, "input[type=text]")
    box.clear()
    box.send_keys(query, Keys.ENTER)
    page.wait_for(f"the Compare tab to show {query!r}", lambda: view() != before and page.kernel_status() == "idle",
                  timeout_s)  # fmt: skip
    page.js("document.querySelector('.widget-tab').scrollIntoView({block: 'center'});")
    time.sleep(1.5)  # thumbnails decode, layout settles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="default when its stage 02 models exist here, else smoke")
    parser.add_argument("--query", default="a smiling cat", help="typed into the Compare tab")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "figures" / "lab")
    args = parser.parse_args(argv)
    profile = args.profile or ("default" if explorer_ready("default") is None else "smoke")
    why = browser_missing() or explorer_ready(profile)
    if why:
        print(f"no screenshots: {why}", file=sys.stderr)
        return 1
    explorer = prepare_explorer(profile)
    env = {"LSR_PROFILE": profile, "HF_HUB_OFFLINE": "1"}
    with jupyter_lab(REPO_ROOT, env=env) as server, headless_chromium(1400, 1200) as driver:
        page = LabPage(driver, server)
        run_clean(page, LANDING)
        path = args.out / f"landing_{profile}.png"
        print("wrote", path, save_small_png(driver.get_screenshot_as_png(), path), "bytes")

        run_clean(page, explorer)
        page.js("window.jupyterapp.shell.collapseLeft();")  # room for the explorer
        compare_view(page, args.query)
        path = args.out / f"explorer_{profile}.png"
        print("wrote", path, save_small_png(driver.get_screenshot_as_png(), path), "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
