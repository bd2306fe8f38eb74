"""``neurocast demo --headless``: one line per model per printed window, all SIMULATED."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from neurocast.server.registry import ModelRegistry

pytestmark = pytest.mark.timeout(120)


def test_headless_demo_prints_every_kind_of_result() -> None:
    demo = [m.id for m in ModelRegistry.discover(None).infos() if m.id.startswith("demo-")]
    if len(demo) < 3:
        pytest.skip(f"the demo models are not built (found {demo}); run `neurocast train demo`")
    run = subprocess.run(
        [sys.executable, "-m", "neurocast.clients.cli", "demo", "--headless", "--seconds", "6"],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    results = [line for line in lines if line.startswith(("SIMULATED t=", "t="))]
    assert results and all(line.startswith("SIMULATED ") for line in results)
    classes = [line for line in results if "demo-classifier classes:" in line]
    retrieval = [line for line in results if "demo-retrieval retrieval: top-3" in line]
    translation = [line for line in results if "demo-translator translation:" in line]
    assert classes and retrieval and translation
    # class probabilities of the three simulated classes, summing to one
    probs = re.findall(r"(rest|speech|motor) ([0-9.]+)", classes[-1])
    assert {c for c, _ in probs} == {"rest", "speech", "motor"}
    assert sum(float(p) for _, p in probs) == pytest.approx(1.0, abs=0.02)
    # three image ids with scores, and the image the simulator presented (or none)
    top = re.search(r"top-3 (.+); presented (\S+)$", retrieval[-1])
    assert top is not None and len(top.group(1).split(", ")) == 3
    assert any(not line.endswith("presented none") for line in retrieval)
    # the translated window's correlation with the simulated MEG
    corr = [re.search(r"r=(-?[0-9.]+)", line) for line in translation]
    values = [float(m.group(1)) for m in corr if m]
    assert values and all(-1.0 <= v <= 1.0 for v in values)
