"""``neurocast simulate`` writes FIF files that ``neurocast info`` (and MNE) read back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mne
import numpy as np
import pytest

from neurocast.clients.cli import COMMANDS, EXIT_OK, EXIT_USAGE, main


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Forward models go to a temporary cache, never the user's ~/.cache."""
    path = tmp_path_factory.mktemp("neurocast-cli-cache")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NEUROCAST_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def simulated_fif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "sim_raw.fif"
    argv = ["simulate", "--out", str(out), "--seconds", "6", "--sfreq", "200", "--seed", "3"]
    assert main(argv) == EXIT_OK
    return out


def info_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["info", str(path), "--json"]) == EXIT_OK
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_commands_are_registered() -> None:
    assert {"simulate", "info"} <= set(COMMANDS)
    for name in ("simulate", "info"):
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0


def test_simulate_writes_a_fif_that_info_reads(
    simulated_fif: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = mne.io.read_raw_fif(simulated_fif, verbose="error")
    assert "SIMULATED" in raw.info["description"]
    assert raw.info["sfreq"] == 200.0 and raw.n_times == 1200
    summary = info_json(simulated_fif, capsys)
    assert summary["simulated"] is True
    assert summary["channel_types"] == {"mag": 102, "grad": 204, "eeg": 64}
    assert summary["duration_s"] == pytest.approx(6.0)
    kinds = {text.split("/")[0] for text in summary["annotations"]}
    assert kinds == {"class", "image"}
    assert summary["events"] is None  # no stim channel
    assert main(["info", str(simulated_fif)]) == EXIT_OK
    text = capsys.readouterr().out
    assert "Simulated:   YES" in text and "102 mag, 204 grad, 64 eeg" in text
    assert "class/*" in text and "image/*" in text


def test_simulate_is_deterministic_per_seed(simulated_fif: Path, tmp_path: Path) -> None:
    again = tmp_path / "again_raw.fif"
    argv = ["simulate", "--out", str(again), "--seconds", "6", "--sfreq", "200", "--seed", "3"]
    assert main(argv) == EXIT_OK
    a = mne.io.read_raw_fif(simulated_fif, verbose="error")
    b = mne.io.read_raw_fif(again, verbose="error")
    np.testing.assert_array_equal(a.get_data(), b.get_data())
    assert list(a.annotations.description) == list(b.annotations.description)


def test_simulate_one_modality(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eeg_raw.fif"
    argv = ["simulate", "--out", str(out), "--seconds", "1", "--sfreq", "250", "--modality", "eeg"]
    assert main(argv) == EXIT_OK
    assert "SIMULATED" in capsys.readouterr().out
    assert info_json(out, capsys)["channel_types"] == {"eeg": 64}


def test_simulate_refuses_bad_arguments(
    simulated_fif: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--seconds", "1", "--sfreq", "200"]
    assert main(["simulate", "--out", str(simulated_fif), *base]) == EXIT_USAGE  # exists
    assert main(["simulate", "--out", str(tmp_path / "x.edf"), *base]) == EXIT_USAGE
    out = str(tmp_path / "x_raw.fif")
    assert main(["simulate", "--out", out, "--seconds", "0"]) == EXIT_USAGE
    assert main(["simulate", "--out", out, *base, "--info", str(tmp_path / "no.fif")]) == EXIT_USAGE
    assert main(["simulate", "--out", out, "--seconds", "1", "--sfreq", "20"]) == EXIT_USAGE
    junk = tmp_path / "cov.fif"
    junk.write_bytes(b"junk")
    assert main(["simulate", "--out", out, *base, "--noise-cov", str(junk)]) == EXIT_USAGE
    assert not Path(out).exists()  # nothing half-written
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--out", out, "--seconds", "1", "--modality", "ecog"])
    assert exc.value.code == 2


def test_overwrite_replaces_the_file(simulated_fif: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim_raw.fif"
    out.write_bytes(b"old")
    argv = ["simulate", "--out", str(out), "--seconds", "1", "--sfreq", "200", "--overwrite"]
    assert main(argv) == EXIT_OK
    assert mne.io.read_raw_fif(out, verbose="error").n_times == 200


def test_info_fails_cleanly_on_unreadable_files(
    simulated_fif: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt = tmp_path / "corrupt_raw.fif"
    corrupt.write_bytes(simulated_fif.read_bytes()[:4000])  # truncated mid-header
    assert main(["info", str(corrupt)]) == EXIT_USAGE
    assert "cannot read" in caplog.text
    text = tmp_path / "notes_raw.fif"
    text.write_text("not a recording\n")
    assert main(["info", str(text)]) == EXIT_USAGE
    assert main(["info", str(tmp_path / "missing.fif")]) == EXIT_USAGE
    assert "no such file" in caplog.text


@pytest.mark.shared_data
def test_info_reads_real_recordings(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edf = info_json(shared_data / "eegbci" / "S001R04.edf", capsys)
    assert edf["simulated"] is False and edf["channel_types"]["eeg"] == 64
    assert edf["sfreq_hz"] == 160.0 and {"T0", "T1", "T2"} <= set(edf["annotations"])
    fif = info_json(shared_data / "meg_eeg" / "sample_audvis_raw.fif", capsys)
    assert fif["channel_types"]["grad"] == 204 and fif["events"] is not None


@pytest.mark.shared_data
def test_simulate_with_real_geometry_and_noise(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fif = shared_data / "meg_eeg" / "sample_audvis_raw.fif"
    cov = shared_data / "meg_eeg" / "sample_audvis-cov.fif"
    out = tmp_path / "real_geom_raw.fif"
    argv = ["simulate", "--out", str(out), "--seconds", "1", "--sfreq", "300"]
    assert main([*argv, "--info", str(fif), "--noise-cov", str(cov)]) == EXIT_OK
    summary = info_json(out, capsys)
    assert summary["simulated"] is True
    assert summary["channel_types"] == {"grad": 204, "mag": 102, "eeg": 60}
    # a covariance of other sensors than the simulated ones is refused
    other = tmp_path / "other_raw.fif"
    assert main(["simulate", "--out", str(other), *argv[3:], "--noise-cov", str(cov)]) == EXIT_USAGE
