"""The dashboard in a real headless Chromium, driven by playwright-core, against the real server.

Needs Debian's ``chromium`` (installed here with apt-get when missing and possible) and Node.js
with npm (``playwright-core`` is installed into a cache folder outside the repository). The
test skips, saying why, when any of these cannot be had.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_server_support import SIM_SPEC, TOKEN, serve

pytest_plugins = ["test_server_support"]
pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neurocast-playwright"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

DRIVER = r"""
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const [url, shot, profile] = process.argv.slice(2);

(async () => {
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM,
    headless: true,
    args: JSON.parse(process.env.CHROMIUM_FLAGS),
    viewport: { width: 1280, height: 1100 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(url);
  const results = () => Number(document.getElementById("result-count").textContent);
  await page.waitForFunction(`(${results})() > 5`, null, { timeout: 60000 });
  const snapshot = () => page.evaluate(() => ({
    results: Number(document.getElementById("result-count").textContent),
    windowEnd: Number(document.getElementById("last-window-end").textContent),
    probabilities: [...document.querySelectorAll(".prob-row")].map((r) => [
      r.dataset.class, Number(r.querySelector(".prob-value").textContent)]),
    state: document.getElementById("state").textContent,
    latencyRows: document.querySelectorAll("#latency tbody tr").length,
    events: document.querySelectorAll("#events li").length,
    thumbnails: [...document.querySelectorAll(".topk img")].filter((i) => i.naturalWidth).length,
    topk: document.querySelectorAll(".topk figure").length,
  }));
  const first = await snapshot();
  await page.waitForFunction(`(${results})() > ${first.results + 20}`, null, { timeout: 60000 });
  await page.waitForTimeout(500);
  const second = await snapshot();
  const simulatedVisible = await page.isVisible("#simulated-badge");
  const simulatedText = await page.textContent("#simulated-badge");
  const tracePixels = await page.evaluate(() => {
    const c = document.getElementById("traces");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n;
  });
  await page.screenshot({ path: shot, fullPage: true });
  await context.close();
  const report = { first, second, simulatedVisible, simulatedText, tracePixels, errors };
  console.log(JSON.stringify(report));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.skip("Debian chromium is not installed and apt-get cannot install it here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
        subprocess.run([apt, "update"], env=env, capture_output=True, timeout=300)
        run = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            pytest.skip(f"could not install chromium with apt-get: {run.stderr[-300:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("chromium was installed but is not on PATH")
    return found


def _playwright_core() -> Path:
    module = CACHE / "node_modules" / "playwright-core"
    if module.is_dir():
        return module
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("Node.js and npm are needed to drive the browser with playwright-core")
    CACHE.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), "playwright-core"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode != 0 or not module.is_dir():
        pytest.skip(f"npm could not install playwright-core: {run.stderr[-300:]}")
    return module


def test_dashboard_shows_live_probabilities(registry, model_ids, tmp_path) -> None:
    chromium = _chromium()
    playwright = _playwright_core()
    script = tmp_path / "drive.js"
    script.write_text(DRIVER)
    shot = tmp_path / "dashboard.png"
    with serve(registry) as (server, client):
        session = client.create_session(
            SIM_SPEC,
            [model_ids["classifier"], model_ids["translator"], model_ids["retrieval"]],
            name="dashboard test",
        )
        assert session.status == "running", session.error
        url = f"{server.url}/dashboard/?session={session.id}#token={TOKEN}"
        env = {
            **os.environ,
            "PLAYWRIGHT_CORE": str(playwright),
            "CHROMIUM": chromium,
            "CHROMIUM_FLAGS": json.dumps(CHROMIUM_FLAGS),
        }
        run = subprocess.run(
            ["node", str(script), url, str(shot), str(tmp_path / "profile")],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    first, second = report["first"], report["second"]
    assert report["errors"] == []
    # probabilities are shown for every class and keep changing as results arrive
    assert [c for c, _ in first["probabilities"]] == ["rest", "speech", "motor"]
    assert second["results"] > first["results"] and second["windowEnd"] > first["windowEnd"]
    assert first["probabilities"] != second["probabilities"]
    for _, p in second["probabilities"]:
        assert 0.0 <= p <= 1.0
    assert sum(p for _, p in second["probabilities"]) == pytest.approx(1.0, abs=0.01)
    assert second["state"].startswith("running")
    assert second["latencyRows"] == 5
    # the stream is simulated, and the page says so
    assert report["simulatedVisible"] and "SIMULATED" in report["simulatedText"]
    # the top-k retrieved images, with their thumbnails fetched with the token
    assert second["topk"] == 5 and second["thumbnails"] == 5
    # translated MEG traces were drawn
    assert report["tracePixels"] > 1000
    assert shot.stat().st_size > 10_000
    print(f"dashboard screenshot: {shot}")
