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
from test_server_support import TOKEN, serve

from neurocast.catalog import PACKAGED_DIR
from neurocast.server.registry import ModelRegistry
from neurocast.streaming.sources.specs import SimulatorSpec

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
const [url, shotDir, profile, smallUrl] = process.argv.slice(2);

// non-transparent pixels of a canvas
const inked = (id) => {
  const c = document.getElementById(id);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
  return n;
};

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
  // an image presented, scored and shown beside the retrieved ones
  await page.waitForFunction(
    () => document.querySelector("#presented img") !== null
      && /over [1-9]/.test(document.getElementById("retrieval-accuracy").textContent),
    null, { timeout: 60000 });
  // the classifier is confident inside a class block: its values change at the next block,
  // when another class leads (a lead that lasts, unlike a last-digit flicker)
  const leader = (rows) => rows.reduce((a, b) => (b[1] > a[1] ? b : a))[0];
  await page.waitForFunction(
    (before) => {
      const rows = [...document.querySelectorAll(".prob-row")].map((r) => [
        r.dataset.class, Number(r.querySelector(".prob-value").textContent)]);
      return rows.length > 0 && rows.reduce((a, b) => (b[1] > a[1] ? b : a))[0] !== before;
    },
    leader(first.probabilities), { timeout: 90000 });
  const second = await snapshot();
  const simulatedVisible = await page.isVisible("#simulated-badge");
  const simulatedText = await page.textContent("#simulated-badge");
  const pixels = {};
  for (const id of ["traces", "signal", "topomap", "topomap-measured", "curves", "prob-history"]) {
    pixels[id] = await page.evaluate(inked, id);
  }
  const text = await page.evaluate(() => ({
    accuracy: document.getElementById("retrieval-accuracy").textContent,
    translation: document.getElementById("translation-info").textContent,
    signal: document.getElementById("signal-info").textContent,
    models: document.getElementById("models").textContent,
    heading: document.getElementById("probabilities-model").textContent,
    panels: ["probabilities", "retrieval", "translation", "curves", "signal"].map(
      (p) => [p, !document.getElementById(`${p}-panel`).hidden]),
  }));
  await page.screenshot({ path: `${shotDir}/dashboard.png`, fullPage: true });
  await page.screenshot({ path: `${shotDir}/dashboard-top.png` });
  // a session with one classifier shows no retrieval or translation panel
  await page.goto(smallUrl);
  await page.waitForFunction(`(${results})() > 3`, null, { timeout: 60000 });
  await page.waitForFunction(() => document.getElementById("probabilities-panel").hidden === false,
    null, { timeout: 30000 });
  const small = await page.evaluate(() => ["probabilities", "retrieval", "translation"].map(
    (p) => [p, !document.getElementById(`${p}-panel`).hidden]));
  // its MEG-only stream is shown on a sensor type it has
  await page.waitForTimeout(1500);
  const smallSignal = await page.evaluate(inked, "signal");
  await page.screenshot({ path: `${shotDir}/dashboard-classifier-only.png`, fullPage: true });
  await context.close();
  const report = {
    first, second, simulatedVisible, simulatedText, pixels, text, small, smallSignal, errors,
  };
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


def test_dashboard_shows_the_demo_session(tmp_path: Path) -> None:
    chromium = _chromium()
    playwright = _playwright_core()
    registry = ModelRegistry.discover(None)
    demo = [m.id for m in registry.infos() if m.packaged and m.id.startswith("demo-")]
    if len(demo) < 3:
        pytest.skip(f"the demo models are not built (found {demo}); run `neurocast train demo`")
    script = tmp_path / "drive.js"
    script.write_text(DRIVER)
    shots = Path(os.environ.get("NEUROCAST_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    spec = SimulatorSpec(modality="both", embeddings_path=str(PACKAGED_DIR / "demo-images.npz"))
    with serve(registry) as (server, client):
        session = client.create_session(spec, demo, name="dashboard test (SIMULATED)")
        assert session.status == "running", session.error
        small = client.create_session(SimulatorSpec(modality="meg"), ["demo-classifier"])
        url = f"{server.url}/dashboard/?session={session.id}#token={TOKEN}"
        small_url = f"{server.url}/dashboard/?session={small.id}#token={TOKEN}"
        env = {
            **os.environ,
            "PLAYWRIGHT_CORE": str(playwright),
            "CHROMIUM": chromium,
            "CHROMIUM_FLAGS": json.dumps(CHROMIUM_FLAGS),
        }
        run = subprocess.run(
            ["node", str(script), url, str(shots), str(tmp_path / "profile"), small_url],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    first, second, pixels, text = (
        report["first"],
        report["second"],
        report["pixels"],
        report["text"],
    )
    assert report["errors"] == []
    # probabilities are shown for every class and keep changing as results arrive
    assert [c for c, _ in first["probabilities"]] == ["rest", "speech", "motor"]
    assert second["results"] > first["results"] and second["windowEnd"] > first["windowEnd"]
    assert first["probabilities"] != second["probabilities"]
    for _, p in second["probabilities"]:
        assert 0.0 <= p <= 1.0
    assert sum(p for _, p in second["probabilities"]) == pytest.approx(1.0, abs=0.01)
    assert second["state"].startswith("running")
    assert second["latencyRows"] == 6  # five stages and end to end
    # the stream is simulated, and the page says so
    assert report["simulatedVisible"] and "SIMULATED" in report["simulatedText"]
    # the top-k retrieved images with their thumbnails, and a running top-5 accuracy
    assert second["topk"] == 5 and second["thumbnails"] == 5
    assert "%" in text["accuracy"]
    # every panel of the three models, the signal view and the topomaps drew something
    assert dict(text["panels"]) == dict.fromkeys(
        ["probabilities", "retrieval", "translation", "curves", "signal"], True
    )
    for canvas in ("traces", "signal", "topomap", "topomap-measured", "curves", "prob-history"):
        assert pixels[canvas] > 1000, (canvas, pixels)
    assert "demo-classifier" in text["models"] and "demo-classifier" in text["heading"]
    assert "mean running r" in text["translation"] and "channels at 150 Hz" in text["signal"]
    # a classifier-only session shows only its panel, and its MEG-only stream
    assert report["smallSignal"] > 1000
    assert dict(report["small"]) == {
        "probabilities": True,
        "retrieval": False,
        "translation": False,
    }
    assert (shots / "dashboard.png").stat().st_size > 10_000
    print(f"dashboard screenshots: {shots}")
