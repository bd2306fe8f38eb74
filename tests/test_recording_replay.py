"""A session decoding a replayed recording gives the outputs recorded in it, window for window,
when the models are the same.

A simulated MEG session is decoded live and recorded (raw stream and probabilities) to XDF.
The file is then decoded again offline, with :func:`decode_array` on the recorded samples and
timestamps, and live, replayed over LSL by :class:`XDFPlayer` and decoded by an
:class:`LSLSource` in a :class:`DecodeLoop`. Offline and from a replay joined at its first
sample, every window gives the recorded probabilities; a replay joined mid-way gives, window
for window, what batch decoding from the joining sample gives. No window is skipped anywhere.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pylsl
import pytest
from numpy.typing import NDArray

from neurocast.catalog import load_models
from neurocast.streaming.engine.loop import DecodeLoop, LoopStats
from neurocast.streaming.engine.pipeline import WindowModel, decode_array
from neurocast.streaming.engine.results import Result
from neurocast.streaming.recording.read import load_xdf
from neurocast.streaming.recording.recorder import SessionRecorder
from neurocast.streaming.recording.replay import XDFPlayer
from neurocast.streaming.recording.tap import RecordingSource
from neurocast.streaming.sources.base import Chunk, Source, SourceStatus, StreamInfo
from neurocast.streaming.sources.lsl import (
    LSLSource,
    build_info,
    describe_channels,
    use_loopback_config,
)
from neurocast.streaming.sources.simulator.source import SimulatorSource
from neurocast.streaming.sources.specs import LSLSpec, SimulatorSpec

# liblsl reads its configuration once per process, at the first LSL call: keep discovery on
# this machine and away from other LSL users
if "LSLAPICFG" not in os.environ:
    use_loopback_config(f"nc-rr-{uuid.uuid4().hex[:8]}")

pytestmark = pytest.mark.timeout(120)

MODEL = "demo-classifier"  # reads the simulator's MEG channels
RAW = "neurocast simulator (SIMULATED)"
OUTPUT = f"{MODEL}-probabilities"
SECONDS = 3.0
STRIDE_S = 0.025
# longer than anything this test waits for, and shorter than the ring buffer's 30 s: a window
# can only be skipped by a bug, never by a slow machine
MAX_LAG_S = 15.0
ATOL = 1e-5


@dataclass
class Recording:
    """What the recorded session left: the file, and what its loop decoded and counted."""

    path: Path
    live: list[Result]
    stats: LoopStats
    n_samples: int


class _Tap:
    """A source that keeps a copy of every chunk it hands on (to align a replay that the
    inlet joined late, and to check that the replayed samples are the recorded ones)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.chunks: list[Chunk] = []

    @property
    def stream_info(self) -> StreamInfo:
        return self.source.stream_info

    @property
    def status(self) -> SourceStatus:
        return self.source.status

    def open(self) -> StreamInfo:
        return self.source.open()

    def read(self, timeout: float) -> Chunk | None:
        chunk = self.source.read(timeout)
        if chunk is not None and len(chunk.timestamps):
            self.chunks.append(chunk)
        return chunk

    def close(self) -> None:
        self.source.close()


def _wait_until(done: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _all_taken(loop: DecodeLoop, n_samples: int) -> bool:
    """True once every window of ``n_samples`` samples has been taken by the decode thread
    (the last one may still be running: :meth:`DecodeLoop.stop` lets it finish)."""
    engine = loop.engine
    return (
        engine is not None
        and engine.ring.n_written >= n_samples
        and engine.clock.next_end > engine.ring.n_written
    )


def _probs(results: list[Result]) -> NDArray[np.float64]:
    return np.array([np.asarray(r.payload["probabilities"], dtype=np.float64) for r in results])


def _by_name(streams: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["info"]["name"][0]: s for s in streams}


@pytest.fixture(scope="module")
def model() -> WindowModel:
    return load_models([MODEL], None)[0]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, model: WindowModel) -> Recording:
    path = tmp_path_factory.mktemp("rec") / "session.xdf"
    recorder = SessionRecorder(path, flush_interval_s=0.2)
    recorder.start()
    spec = SimulatorSpec(modality="meg", seed=7, realtime=True, duration_s=SECONDS)
    source = RecordingSource(SimulatorSource(spec), recorder)
    live: list[Result] = []
    loop = DecodeLoop(
        source, [model], source.results_to(live.append), stride_s=STRIDE_S, max_lag_s=MAX_LAG_S
    )
    n_samples = round(SECONDS * spec.sfreq)
    loop.start()
    try:
        _wait_until(lambda: _all_taken(loop, n_samples), SECONDS + 20, "the recorded session")
    finally:
        loop.stop()
        status = recorder.stop()
    assert loop.error is None
    assert status.state == "stopped", status.reason
    assert status.n_samples == n_samples and status.n_results == len(live)
    return Recording(path, live, loop.stats(), n_samples)


def _recorded(path: Path) -> tuple[dict[str, dict[str, Any]], StreamInfo]:
    """The file's streams with their timestamps as recorded, and the raw stream's metadata
    rebuilt from its header alone (as any reader of the file would)."""
    streams, _, scan = load_xdf(path, synchronize_clocks=False, dejitter_timestamps=False)
    assert not scan.truncated
    by_name = _by_name(streams)
    raw = by_name[RAW]
    xml = scan.headers[int(raw["info"]["stream_id"])]
    channels, simulated = describe_channels(xml)
    assert all(c.scale == 1.0 for c in channels)  # recorded in SI units
    info = build_info(channels, float(raw["info"]["nominal_srate"][0]))
    return by_name, StreamInfo(RAW, info, simulated=simulated, source_id="recording")


def test_offline_decoding_of_the_recording_gives_the_recorded_outputs(
    recording: Recording, model: WindowModel
) -> None:
    streams, stream = _recorded(recording.path)
    raw, out = streams[RAW], streams[OUTPUT]
    data = np.asarray(raw["time_series"])
    ts = np.asarray(raw["time_stamps"], dtype=np.float64)
    assert data.dtype == np.float32 and data.shape == (recording.n_samples, stream.n_channels)
    assert stream.simulated

    batch = list(decode_array(data.T, ts, stream, [model], stride_s=STRIDE_S))
    assert len(batch) >= 80  # after the preprocessing delay, about one per stride
    assert all(r.valid and not r.skipped for r in batch)

    # window for window, matched by end timestamp: the same windows, none missing or extra
    t_rec = np.asarray(out["time_stamps"], dtype=np.float64)
    t_batch = np.array([r.t_window_end for r in batch])
    np.testing.assert_array_equal(t_rec, t_batch)
    np.testing.assert_allclose(np.asarray(out["time_series"]), _probs(batch), rtol=0, atol=ATOL)
    # the file holds what the live loop decoded, and the live loop skipped nothing
    assert [r.window_end for r in recording.live] == [r.window_end for r in batch]
    assert recording.stats.n_skipped == 0 and recording.stats.skipped_by_reason == {}
    assert all(r.skipped == 0 and r.valid for r in recording.live)
    np.testing.assert_allclose(_probs(recording.live), _probs(batch), rtol=0, atol=ATOL)


@contextmanager
def _replay(path: Path, prefix: str, *, wait: bool) -> Iterator[threading.Thread]:
    player = XDFPlayer(
        path, name_prefix=prefix, wait_for_consumer=wait, wait_timeout_s=10.0, linger_s=1.0
    )
    stop = threading.Event()
    thread = threading.Thread(target=player.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(10)


def _pull(inlet: pylsl.StreamInlet, n: int) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    values: list[list[float]] = []
    stamps: list[float] = []
    deadline = time.monotonic() + 10.0
    while len(stamps) < n and time.monotonic() < deadline:
        v, t = inlet.pull_chunk(timeout=0.1)
        values.extend(v)
        stamps.extend(t)
    return np.array(values, dtype=np.float32), np.array(stamps, dtype=np.float64)


@pytest.mark.parametrize("join", ["at_start", "late"])
def test_live_decoding_of_the_replayed_recording_gives_the_same_outputs(
    recording: Recording, model: WindowModel, join: str
) -> None:
    streams, stream = _recorded(recording.path)
    data = np.asarray(streams[RAW]["time_series"])
    ts = np.asarray(streams[RAW]["time_stamps"], dtype=np.float64)
    out = streams[OUTPUT]
    prefix = f"rr{uuid.uuid4().hex[:6]}-"
    at_start = join == "at_start"

    live: list[Result] = []
    replayed: tuple[NDArray[np.float32], NDArray[np.float64]] | None = None
    # at_start: the player waits until every one of its outlets (raw, markers, outputs) has
    # an inlet, so the source gets the first sample; late: it starts at once and the source
    # joins mid-way, wherever resolving and subscribing took it
    with _replay(recording.path, prefix, wait=at_start) as player:
        outputs: pylsl.StreamInlet | None = None
        if at_start:
            found = pylsl.resolve_byprop("name", prefix + OUTPUT, timeout=10.0)
            assert found, f"no outlet {prefix + OUTPUT}"
            outputs = pylsl.StreamInlet(found[0], max_buflen=30, processing_flags=0)
            outputs.open_stream(timeout=5.0)
        spec = LSLSpec(
            name=prefix + RAW,
            marker_stream=prefix + RAW + "-markers" if at_start else None,
            buffer_s=10,
            resolve_timeout_s=10.0,
            stall_after_s=5.0,
        )
        tap = _Tap(LSLSource(spec))
        loop = DecodeLoop(tap, [model], live.append, stride_s=STRIDE_S, max_lag_s=MAX_LAG_S)
        loop.start()
        try:
            _wait_until(lambda: bool(tap.chunks), 15.0, "the first replayed chunk")
            first = tap.chunks[0].data[0]
            # where the source joined the replay: the one recorded sample equal to its first
            k0s = np.flatnonzero((data == first).all(axis=1))
            assert k0s.size == 1, f"the first replayed sample matches rows {k0s}"
            k0 = int(k0s[0])
            n_live = recording.n_samples - k0
            _wait_until(lambda: _all_taken(loop, n_live), SECONDS + 20, "the replayed session")
        finally:
            loop.stop()
        if outputs is not None:
            replayed = _pull(outputs, len(out["time_stamps"]))
            outputs.close_stream()
        player.join(10)
        assert not player.is_alive()

    assert loop.error is None
    assert (k0 == 0) == at_start, f"the source joined at sample {k0}"
    got = np.concatenate([c.data for c in tap.chunks])
    t_got = np.concatenate([c.timestamps for c in tap.chunks])
    # every sample from the joining one on arrives unchanged, at the recorded spacing
    np.testing.assert_array_equal(got, data[k0:])
    np.testing.assert_allclose(t_got - t_got[0], ts[k0:] - ts[k0], rtol=0, atol=1e-6)
    assert loop.stream_info.ch_names == stream.ch_names
    assert loop.stream_info.sfreq == stream.sfreq and loop.stream_info.simulated

    # decoded from the same sample on, the filters start from the same state
    batch = list(decode_array(data[k0:].T, ts[k0:], stream, [model], stride_s=STRIDE_S))
    assert len(batch) >= 20
    assert [r.window_end for r in live] == [r.window_end for r in batch]
    stats = loop.stats()
    assert stats.n_skipped == 0 and stats.skipped_by_reason == {}
    assert all(r.skipped == 0 and r.valid for r in live)
    np.testing.assert_allclose(_probs(live), _probs(batch), rtol=0, atol=ATOL)
    t_live = np.array([r.t_window_end for r in live]) - t_got[0]
    t_batch = np.array([r.t_window_end for r in batch]) - ts[k0]
    np.testing.assert_allclose(t_live, t_batch, rtol=0, atol=1e-6)

    if at_start:
        # from the first sample on, the replay decodes to the outputs recorded in the file,
        # and to the outputs the player replays alongside the data
        t_rec = np.asarray(out["time_stamps"], dtype=np.float64) - ts[0]
        np.testing.assert_allclose(t_rec, t_live, rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.asarray(out["time_series"]), _probs(live), rtol=0, atol=ATOL)
        assert replayed is not None
        values, stamps = replayed
        np.testing.assert_array_equal(values, np.asarray(out["time_series"]))
        np.testing.assert_allclose(stamps - t_got[0], t_live, rtol=0, atol=1e-6)
