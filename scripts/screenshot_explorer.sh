#!/usr/bin/env bash
# Screenshot of the stage-06 explorer widget, rendered by a real JupyterLab in headless Chromium.
#
#   scripts/screenshot_explorer.sh [profile] [out.png] [query] [model]
#   scripts/screenshot_explorer.sh smoke figures/06_explorer_widget.png "smiling face" M1
#
# Needs: stages 01, 02 (and 04 for its saved indexes) of <profile> already run; Chromium from the
# Debian packages (apt-get install -y chromium); the project venv (.venv) with jupyterlab.
# Steps:
#   1. papermill --prepare-only writes a copy of notebooks/06_explore_sparse_vectors.ipynb with
#      interactive = True under runs/<profile>/screenshot/ (gitignored; nothing is executed yet);
#   2. JupyterLab starts on a free port with throw-away settings (no news pop-up, no notebook
#      windowing) and window.jupyterapp exposed to the page;
#   3. headless Chromium opens the notebook; through the DevTools protocol the script waits for the
#      kernel, runs all cells, fails on any error output, types <query> + Enter into the widget's
#      query box (a real browser -> kernel -> browser round trip), picks the first model whose name
#      starts with <model> in the Query tab's model menu (when there is one), waits for each redraw,
#      and saves the Query tab to <out.png>, then clicks the Image and Compare tabs and saves
#      <out>_image.png and <out>_compare.png.
# Only the processes this script starts are stopped at the end (by their ids).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-smoke}
OUT=${2:-figures/06_explorer_widget.png}
QUERY=${3:-smiling face}
MODEL=${4:-M1}
PY=.venv/bin/python
CHROMIUM=${CHROMIUM:-chromium}
export HF_HUB_OFFLINE=1

NB_DIR=runs/$PROFILE/screenshot
NB=$NB_DIR/06_explore_sparse_vectors.ipynb
mkdir -p "$NB_DIR" "$(dirname "$OUT")"
$PY -m papermill --prepare-only -p profile "$PROFILE" -p interactive True -p progress False \
    notebooks/06_explore_sparse_vectors.ipynb "$NB" >/dev/null 2>&1

TMP=$(mktemp -d)
mkdir -p "$TMP/settings/@jupyterlab/apputils-extension" "$TMP/settings/@jupyterlab/notebook-extension" "$TMP/workspaces"
echo '{"fetchNews": "false", "checkForUpdates": false}' > "$TMP/settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
echo '{"windowingMode": "none"}' > "$TMP/settings/@jupyterlab/notebook-extension/tracker.jupyterlab-settings"
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
LAB_PORT=$(free_port)
CDP_PORT=$(free_port)

LAB_PID= ; CHROME_PID=
cleanup() {
    for pid in $CHROME_PID $LAB_PID; do kill "$pid" 2>/dev/null || true; done
    for pid in $CHROME_PID $LAB_PID; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP" 2>/dev/null || { sleep 2; rm -rf "$TMP"; }
}
trap cleanup EXIT

.venv/bin/jupyter lab --no-browser --allow-root --port="$LAB_PORT" --ServerApp.ip=127.0.0.1 --ServerApp.token= --ServerApp.password= \
    --ServerApp.root_dir="$PWD" --LabApp.expose_app_in_browser=True --LabApp.user_settings_dir="$TMP/settings" \
    --LabApp.workspaces_dir="$TMP/workspaces" >"$TMP/lab.log" 2>&1 &
LAB_PID=$!
for _ in $(seq 90); do curl -sf "http://127.0.0.1:$LAB_PORT/api/status" >/dev/null && break; sleep 1; done
curl -sf "http://127.0.0.1:$LAB_PORT/api/status" >/dev/null || { echo "JupyterLab did not start:"; tail -20 "$TMP/lab.log"; exit 1; }

"$CHROMIUM" --headless=new --no-sandbox --disable-gpu --hide-scrollbars --remote-debugging-port="$CDP_PORT" \
    --user-data-dir="$TMP/chrome" --window-size=1600,1050 about:blank >"$TMP/chrome.log" 2>&1 &
CHROME_PID=$!
for _ in $(seq 30); do curl -sf "http://127.0.0.1:$CDP_PORT/json/version" >/dev/null && break; sleep 1; done
curl -sf "http://127.0.0.1:$CDP_PORT/json/version" >/dev/null || { echo "Chromium did not start:"; tail -20 "$TMP/chrome.log"; exit 1; }

$PY - "$CDP_PORT" "http://127.0.0.1:$LAB_PORT/lab/tree/$NB" "$OUT" "$QUERY" "$MODEL" <<'PYEOF'
"""Drive the page through the Chrome DevTools protocol (tornado's websocket client, no extra package)."""
import asyncio, base64, json, sys, time, urllib.request
from pathlib import Path

from tornado.websocket import websocket_connect

cdp_port, url, out, query, model = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4], sys.argv[5]
VIEW = "document.querySelector('.widget-tab .widget-html-content').innerHTML"
PANEL = "(window.jupyterapp && Array.from(jupyterapp.shell.widgets('main')).find(w => w.sessionContext && w.content))"
KERNEL = f"({PANEL} && {PANEL}.sessionContext.session && {PANEL}.sessionContext.session.kernel)"
STATE = f"""(() => {{ const p = {PANEL}; if (!p || !p.content || !p.content.model) return null;
  const cells = p.content.model.cells; let pending = 0, errors = [];
  for (let i = 0; i < cells.length; i++) {{ const c = cells.get(i); if (c.type !== 'code') continue;
    if (c.executionCount === null) pending++;
    for (let j = 0; j < c.outputs.length; j++) {{ const o = c.outputs.get(j); if (o.type === 'error') errors.push(o.toJSON().ename + ': ' + o.toJSON().evalue); }} }}
  return {{pending, errors, kernel: {KERNEL} ? {KERNEL}.status : null, tabs: document.querySelectorAll('.widget-tab').length,
           images: document.querySelectorAll('.widget-tab img').length}}; }})()"""


async def main():
    page = next(t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{cdp_port}/json")) if t["type"] == "page")
    ws = await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=1 << 28)
    counter = iter(range(1, 10**9))

    async def call(method, **params):
        i = next(counter)
        await ws.write_message(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(await ws.read_message())
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def js(expr):
        r = await call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page error: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait(what, cond, timeout=300):
        t0 = time.time()
        while time.time() - t0 < timeout:
            state = await js(STATE)
            if state and cond(state):
                return state
            await asyncio.sleep(1)
        debug = out.with_name(out.stem + "_debug.png")
        debug.write_bytes(base64.b64decode((await call("Page.captureScreenshot", format="png"))["data"]))
        info = await js("JSON.stringify({title: document.title, url: location.href, app: typeof window.jupyterapp, current: String(window.jupyterapp && jupyterapp.shell.currentWidget)})")
        raise TimeoutError(f"waiting for {what}: last state {state}; page {info}; screenshot {debug}")

    async def redrawn(old, what):
        for _ in range(120):
            if await js(VIEW) != old:
                return
            await asyncio.sleep(0.5)
        await shot(out.with_name(out.stem + "_debug.png"))
        raise SystemExit(f"the widget did not redraw after {what}")

    async def shot(path):
        await asyncio.sleep(1.5)  # let images decode and layout settle
        path.write_bytes(base64.b64decode((await call("Page.captureScreenshot", format="png"))["data"]))
        print("wrote", path)

    await call("Emulation.setFocusEmulationEnabled", enabled=True)  # headless: let JupyterLab track the focused notebook
    await call("Emulation.setDeviceMetricsOverride", width=1600, height=1050, deviceScaleFactor=1, mobile=False)
    await call("Page.navigate", url=url)
    await wait("the kernel", lambda s: s["kernel"] == "idle", 180)
    await js(f"jupyterapp.shell.collapseLeft(); jupyterapp.shell.activateById({PANEL}.id); true")
    await asyncio.sleep(1)
    await js("void jupyterapp.commands.execute('notebook:run-all-cells'); true")
    state = await wait("all cells", lambda s: s["pending"] == 0 and s["kernel"] == "idle" and s["images"] > 0, 600)
    if state["errors"]:
        raise SystemExit(f"the notebook raised: {state['errors']}")
    box = "document.querySelector('.widget-tab input[type=text]')"
    await js(f"{box}.scrollIntoView({{block: 'center'}}); {box}.focus(); {box}.select(); true")
    if await js(f"{box}.value") == query:
        raise SystemExit(f"the query box already holds {query!r}: give another query, so that typing it shows a redraw")
    old = await js(VIEW)
    await call("Input.insertText", text=query)
    await call("Input.dispatchKeyEvent", type="keyDown", key="Enter", code="Enter", text="\r", windowsVirtualKeyCode=13, nativeVirtualKeyCode=13)
    await call("Input.dispatchKeyEvent", type="keyUp", key="Enter", code="Enter", windowsVirtualKeyCode=13, nativeVirtualKeyCode=13)
    await redrawn(old, f"typing {query!r}")
    # the model menu of the Query tab: a real 'change' event on its <select>
    old = await js(VIEW)
    picked = await js(f"""(() => {{ const s = document.querySelector('.widget-tab .widget-dropdown select');
        const o = Array.from(s.options).find(o => o.text.startsWith({json.dumps(model)})); if (!o || o.selected) return null;
        s.value = o.value; s.dispatchEvent(new Event('change', {{bubbles: true}})); return o.text; }})()""")
    if picked:
        await redrawn(old, f"picking the model {picked!r}")
    await wait("the kernel", lambda s: s["kernel"] == "idle" and s["images"] > 0, 120)
    await js("document.querySelector('.widget-tab').scrollIntoView({block: 'start'}); true")
    await shot(out)
    for index, name in ((1, "image"), (2, "compare")):  # clicked with the (emulated) mouse
        rect = await js(f"(() => {{ const r = document.querySelectorAll('.widget-tab .lm-TabBar-tab')[{index}].getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await call("Input.dispatchMouseEvent", type=kind, x=rect[0], y=rect[1], button="left", clickCount=1)
        if not await js(f"document.querySelectorAll('.widget-tab .lm-TabBar-tab')[{index}].classList.contains('lm-mod-current')"):
            raise SystemExit(f"the {name} tab did not open")
        await shot(out.with_name(f"{out.stem}_{name}{out.suffix}"))


asyncio.run(main())
PYEOF
