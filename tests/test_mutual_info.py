"""EEG–MEG mutual information analysis."""

from __future__ import annotations

import json

import mne
import numpy as np
import pytest

from neurocast.clients.cli import main
from neurocast.models.analysis.mutual_info import eeg_meg_mutual_info


def _raw_with_geometry(coupling: float, lag: int = 0, seed: int = 0) -> mne.io.RawArray:
    """4 EEG + 2 MEG channels: MEG 0 follows EEG 0 (with ``coupling``), MEG 1 is independent."""
    rng = np.random.default_rng(seed)
    sfreq, n = 200.0, 4000
    eeg = rng.standard_normal((4, n)) * 1e-5
    meg = rng.standard_normal((2, n)) * 1e-12
    meg[0] = coupling * np.roll(eeg[0], lag) * 1e-7 + (1 - coupling) * meg[0]
    info = mne.create_info(["E1", "E2", "E3", "E4", "M1", "M2"], sfreq, ["eeg"] * 4 + ["mag"] * 2)
    for k, ch in enumerate(info["chs"]):
        ch["loc"][:3] = [0.02 * k, 0.0, 0.09]
        if ch["kind"] == mne.io.constants.FIFF.FIFFV_MEG_CH:
            ch["loc"][3:12] = np.eye(3).ravel()
    info["dev_head_t"] = mne.transforms.Transform("meg", "head", np.eye(4))
    return mne.io.RawArray(np.vstack([eeg, meg]), info, verbose="error")


def test_dependent_pair_has_more_information_in_bits() -> None:
    res = eeg_meg_mutual_info(
        _raw_with_geometry(0.8), l_freq_hz=None, h_freq_hz=None, max_lag_ms=0, n_pairs=None
    )
    mi = dict(zip(zip(res.eeg_names, res.meg_names, strict=True), res.mi_bits, strict=True))
    assert mi[("E1", "M1")] > 0.5  # strongly coupled
    assert mi[("E2", "M1")] < 0.1 and mi[("E1", "M2")] < 0.1
    assert np.median(res.null_bits) < 0.1
    # distances in cm from the positions above (2 cm apart along x)
    k = res.eeg_names.index("E1")
    assert res.meg_names[k] == "M1" and res.distance_cm[k] == pytest.approx(8.0)


def test_lag_maximisation_finds_the_lag() -> None:
    raw = _raw_with_geometry(0.9, lag=3)  # MEG lags EEG by 3 samples = 15 ms at 200 Hz
    res = eeg_meg_mutual_info(raw, l_freq_hz=None, h_freq_hz=None, max_lag_ms=25, n_pairs=None)
    k = next(
        i
        for i, (e, m) in enumerate(zip(res.eeg_names, res.meg_names, strict=True))
        if (e, m) == ("E1", "M1")
    )
    assert res.best_lag_ms[k] == pytest.approx(15.0)


def test_needs_both_modalities() -> None:
    raw = _raw_with_geometry(0.5).pick(["E1", "E2"])
    with pytest.raises(ValueError, match="both EEG and MEG"):
        eeg_meg_mutual_info(raw)


@pytest.mark.shared_data
def test_cli_on_real_recording_writes_plot(shared_data, tmp_path, capsys) -> None:
    out = tmp_path / "mi.png"
    f = shared_data / "meg_eeg" / "sample_audvis_raw.fif"
    code = main(
        ["analyze", "mi", str(f), "--pairs", "60", "--lag-step-ms", "10", "--out", str(out)]
    )
    assert code == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    figures = json.loads(lines[0])
    assert figures["simulated"] is False and figures["n_pairs"] == 60
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_unreadable_file_is_exit_2(tmp_path) -> None:
    bad = tmp_path / "broken.fif"
    bad.write_bytes(b"not a fif file")
    assert main(["analyze", "mi", str(bad), "--out", str(tmp_path / "x.png")]) == 2
