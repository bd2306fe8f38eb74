"""File replay: ReplaySource on the shared recordings, and the LSL / FieldTrip players."""

from __future__ import annotations

import os
import socket
import threading
import uuid
import warnings
from pathlib import Path

import mne
import numpy as np
import pytest

from neurocast.clients.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from neurocast.streaming.sources.base import Chunk, SourceError, local_clock
from neurocast.streaming.sources.lsl import LSLSource, use_loopback_config
from neurocast.streaming.sources.replay import FieldTripPlayer, LSLPlayer, ReplaySource
from neurocast.streaming.sources.specs import FieldTripSpec, LSLSpec, ReplaySpec

# liblsl reads its configuration once per process: keep discovery on this machine
if "LSLAPICFG" not in os.environ:
    use_loopback_config(f"nc-test-{uuid.uuid4().hex[:8]}")

pytestmark = pytest.mark.timeout(60)

EDF = "eegbci/S001R03.edf"
FIF = "meg_eeg/sample_audvis_raw.fif"
SET = "eeglab/test_raw.set"
MAT = "meg_eeg/neuromag306_fieldtrip_raw_v7.mat"
KIT = "meg_eeg/kit_test_as-raw.con"


def _raw(path: Path) -> mne.io.BaseRaw:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if path.suffix == ".mat":
            return mne.io.read_raw_fieldtrip(path, info=None)
        return mne.io.read_raw(path, verbose="error")


def _read(source: ReplaySource, n: int) -> list[Chunk]:
    chunks: list[Chunk] = []
    while sum(len(c.timestamps) for c in chunks) < n:
        chunk = source.read(1.0)
        if chunk is None:
            assert source.status == "stopped"
            break
        chunks.append(chunk)
    return chunks


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("rel", "seconds", "n_channels", "sfreq"),
    [
        (EDF, 9.0, 64, 160.0),
        (FIF, None, 376, 300.307),
        (SET, 3.0, 32, 128.0),
        (MAT, None, 373, 300.307),
    ],
)
def test_replay_gives_the_files_samples(
    shared_data: Path, rel: str, seconds: float | None, n_channels: int, sfreq: float
) -> None:
    path = shared_data / rel
    raw = _raw(path)
    n = raw.n_times if seconds is None else int(seconds * raw.info["sfreq"])
    source = ReplaySource(ReplaySpec(path=str(path), speed=50.0, chunk_s=0.05))
    info = source.open()
    assert info.ch_names == raw.ch_names
    assert info.n_channels == n_channels
    assert info.sfreq == pytest.approx(sfreq, abs=1e-3)
    assert not info.simulated
    try:
        chunks = _read(source, n)
    finally:
        source.close()
    data = np.concatenate([c.data for c in chunks])[:n]
    ts = np.concatenate([c.timestamps for c in chunks])[:n]
    np.testing.assert_array_equal(data, raw.get_data(stop=n).T)
    np.testing.assert_allclose(np.diff(ts), 1 / info.sfreq, rtol=0, atol=1e-9)
    for c in chunks:  # released only once the last sample was due, on the local clock
        assert c.receipt_time >= c.timestamps[-1] + c.clock_offset
    if seconds is None:
        assert source.status == "stopped"
    markers = [m for c in chunks for m in c.markers]
    sfreq = raw.info["sfreq"]
    want = list(
        zip(raw.annotations.onset - raw.first_time, raw.annotations.description, strict=True)
    )
    if "stim" in raw.get_channel_types():
        events = mne.find_events(raw, shortest_event=1, initial_event=True, verbose="error")
        want += [((s - raw.first_samp) / sfreq, str(v)) for s, _, v in events]
    want = sorted((t, v) for t, v in want if t < n / sfreq)
    assert want or rel == FIF  # the FIF excerpt holds no events
    assert [m.value for m in markers] == [v for _, v in want]
    got = [m.timestamp - source.start_time for m in markers]
    np.testing.assert_allclose(got, [t for t, _ in want], atol=1 / sfreq)


@pytest.mark.shared_data
def test_loop_continues_timestamps_and_repeats_samples(shared_data: Path) -> None:
    raw = _raw(shared_data / KIT)
    source = ReplaySource(ReplaySpec(path=str(shared_data / KIT), speed=20.0, loop=True))
    source.open()
    try:
        chunks = _read(source, 2 * raw.n_times + 10)
    finally:
        source.close()
    data = np.concatenate([c.data for c in chunks])
    ts = np.concatenate([c.timestamps for c in chunks])
    n = raw.n_times
    np.testing.assert_array_equal(data[n : 2 * n], data[:n])
    np.testing.assert_allclose(np.diff(ts), 1 / raw.info["sfreq"], rtol=0, atol=1e-9)


@pytest.mark.shared_data
def test_stim_channel_events_become_markers(shared_data: Path, tmp_path: Path) -> None:
    raw = _raw(shared_data / FIF).crop(0, 1.0).load_data()
    stim = raw.copy().pick(["STI 014"]).get_data()
    stim[0, 30:33] = 5  # a trigger on the stim channel at sample 30, another at 200
    stim[0, 200:203] = 3
    raw._data[raw.ch_names.index("STI 014")] = stim[0]
    path = tmp_path / "stim_raw.fif"
    raw.save(path, verbose="error")
    source = ReplaySource(ReplaySpec(path=str(path), speed=50.0))
    source.open()
    try:
        markers = [m for c in _read(source, raw.n_times) for m in c.markers]
    finally:
        source.close()
    assert [m.value for m in markers] == ["5", "3"]
    sfreq = raw.info["sfreq"]
    np.testing.assert_allclose(
        [m.timestamp - source.start_time for m in markers], [30 / sfreq, 200 / sfreq]
    )


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("broken_raw.fif", b"not a fif file" * 10, "MNE cannot read"),
        ("broken.edf", b"0       garbage" * 10, "MNE cannot read"),
        ("notes.xyz", b"hello", "MNE cannot read"),
        ("missing.fif", None, "no such file"),
    ],
)
def test_unreadable_file_gives_a_clear_error(
    tmp_path: Path, name: str, content: bytes | None, why: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    source = ReplaySource(ReplaySpec(path=str(path)))
    with pytest.raises(SourceError, match=why) as err:
        source.open()
    assert str(path) in str(err.value)
    assert source.status == "failed"
    assert main(["replay", str(path)]) == EXIT_USAGE


def test_cli_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["replay", "x.fif", "--speed", "0"],
        ["replay", "x.fif", "--to", "udp"],
        ["replay", "x.fif", "--port", "70000"],
    ):
        with pytest.raises(SystemExit) as err:
            main(argv)
        assert err.value.code == EXIT_USAGE
    assert main(["replay", "x.fif", "--chunk-ms", "5000"]) == EXIT_USAGE
    assert "--chunk-ms" in capsys.readouterr().err


@pytest.mark.shared_data
def test_lsl_player_publishes_samples_markers_and_metadata(shared_data: Path) -> None:
    path = shared_data / EDF
    raw = _raw(path)
    name = f"replay-{uuid.uuid4().hex[:8]}"
    player = LSLPlayer(ReplaySpec(path=str(path), speed=8.0), name=name, wait_for_consumer=True)
    stop, started = threading.Event(), threading.Event()
    thread = threading.Thread(target=player.run, args=(stop, started), daemon=True)
    thread.start()
    source = LSLSource(
        LSLSpec(name=name, marker_stream=f"{name}-markers", buffer_s=10, resolve_timeout_s=10)
    )
    try:
        info = source.open()
        assert info.ch_names == raw.ch_names
        assert info.sfreq == raw.info["sfreq"]
        assert set(info.info.get_channel_types()) == {"eeg"}
        assert started.wait(10)
        n = int(9 * raw.info["sfreq"])
        chunks: list[Chunk] = []
        while sum(len(c.timestamps) for c in chunks) < n:
            chunk = source.read(2.0)
            assert chunk is not None, "the player stopped publishing"
            assert chunk.receipt_time >= chunk.timestamps[-1] + chunk.clock_offset
            chunks.append(chunk)
    finally:
        stop.set()
        thread.join(10)
        source.close()
    data = np.concatenate([c.data for c in chunks])[:n]
    ts = np.concatenate([c.timestamps for c in chunks])[:n]
    want = raw.get_data(stop=n).T.astype(np.float32)
    np.testing.assert_array_equal(data, want)
    # stamped with each sample's own due time: evenly spaced at the replay speed
    np.testing.assert_allclose(np.diff(ts), 1 / (raw.info["sfreq"] * 8.0), rtol=1e-6)
    markers = [m for c in chunks for m in c.markers]
    assert [m.value for m in markers] == ["T0", "T2", "T0"]
    onsets = np.round(raw.annotations.onset[:3] * raw.info["sfreq"]).astype(int)
    np.testing.assert_allclose([m.timestamp for m in markers], ts[onsets], atol=1e-6)


@pytest.mark.shared_data
def test_fieldtrip_player_writes_the_files_samples(shared_data: Path) -> None:
    from neurocast.streaming.sources.fieldtrip.server import FieldTripServer
    from neurocast.streaming.sources.fieldtrip.source import FieldTripSource

    path = shared_data / FIF
    raw = _raw(path)
    stop, started = threading.Event(), threading.Event()
    with FieldTripServer("127.0.0.1", port=0).serve_in_thread() as server:
        player = FieldTripPlayer(ReplaySpec(path=str(path), speed=4.0), port=server.port)
        thread = threading.Thread(target=player.run, args=(stop, started), daemon=True)
        thread.start()
        assert started.wait(10)
        source = FieldTripSource(FieldTripSpec(port=server.port))
        try:
            info = source.open()
            assert info.ch_names == raw.ch_names
            chunks: list[Chunk] = []
            deadline = local_clock() + 10
            while sum(len(c.timestamps) for c in chunks) < 200 and local_clock() < deadline:
                chunk = source.read(1.0)
                if chunk is not None:
                    chunks.append(chunk)
        finally:
            stop.set()
            thread.join(10)
            source.close()
    data = np.concatenate([c.data for c in chunks])
    assert len(data) >= 200
    full = raw.get_data().T.astype(np.float32)
    # the source starts at the newest sample: find where, then compare sample for sample
    first = int(np.flatnonzero((full == data[0]).all(axis=1))[0])
    np.testing.assert_array_equal(data, full[first : first + len(data)])


@pytest.mark.shared_data
def test_cli_replays_to_lsl_until_the_end(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    code = main(["replay", str(shared_data / KIT), "--to", "lsl", "--speed", "4", "--name", name])
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert "Replayed 200 samples." in out


@pytest.mark.shared_data
def test_cli_reports_an_unreachable_fieldtrip_buffer(
    shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["replay", str(shared_data / KIT), "--to", "fieldtrip", "--port", str(port)])
    assert code == EXIT_FAILURE
    assert str(port) in capsys.readouterr().err
