"""Service settings (auth rules, environment) and the data-root path checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from neurocast.hosts import is_loopback
from neurocast.server.config import Settings
from neurocast.server.data_root import resolve_under_root
from neurocast.server.errors import ApiError


def test_auth_off_is_refused_unless_on_loopback() -> None:
    with pytest.raises(ValidationError, match="loopback"):
        Settings.from_env({"NEUROCAST_AUTH": "off", "NEUROCAST_HOST": "0.0.0.0"})
    settings = Settings.from_env({"NEUROCAST_AUTH": "off", "NEUROCAST_HOST": "127.0.0.1"})
    assert settings.effective_token is None


def test_auth_stays_on_unless_explicitly_off() -> None:
    for value in ("on", "yes", "", "anything"):
        assert Settings.from_env({"NEUROCAST_AUTH": value}).effective_token is not None


def test_token_from_environment_or_generated() -> None:
    given = Settings.from_env({"NEUROCAST_TOKEN": "s3cret"})
    assert given.effective_token == "s3cret" and not given.token_generated
    generated = Settings.from_env({})
    assert generated.token_generated and len(generated.effective_token or "") >= 24
    assert Settings.from_env({}).effective_token != generated.effective_token


def test_environment_values_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "NEUROCAST_CORS_ORIGINS": "http://a.example, http://b.example",
            "NEUROCAST_MAX_UPLOAD_MB": "2",
            "NEUROCAST_PORT": "9001",
        }
    )
    assert settings.cors_origins == ["http://a.example", "http://b.example"]
    assert settings.max_upload_bytes == 2 * 1024**2
    assert settings.port == 9001
    assert Settings.from_env({"NEUROCAST_PORT": "9001"}, port=9002).port == 9002


def test_missing_directories_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="models directory"):
        Settings(models_dir=tmp_path / "nope")
    with pytest.raises(ValidationError, match="data root"):
        Settings(data_root=tmp_path / "nope")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("example.org", False),
    ],
)
def test_loopback_detection(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_paths_must_stay_under_the_data_root(tmp_path: Path) -> None:
    root = (tmp_path / "data").resolve()
    (root / "sub").mkdir(parents=True)
    inside = root / "sub" / "rec_raw.fif"
    inside.write_bytes(b"x")
    outside = tmp_path / "secret.txt"
    outside.write_text("no")
    os.symlink(outside, root / "link.txt")
    assert resolve_under_root(root, "sub/rec_raw.fif") == inside
    assert resolve_under_root(root, str(inside)) == inside
    for bad in ("../secret.txt", "sub/../../secret.txt", str(outside), "link.txt"):
        with pytest.raises(ApiError) as err:
            resolve_under_root(root, bad)
        assert err.value.status_code == 403 and err.value.code == "path_outside_data_root"
    with pytest.raises(ApiError) as err:
        resolve_under_root(root, "sub/missing.fif")
    assert err.value.status_code == 404
    with pytest.raises(ApiError) as err:
        resolve_under_root(None, "sub/rec_raw.fif")
    assert err.value.code == "path_access_disabled"
