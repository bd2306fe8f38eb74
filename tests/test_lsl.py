"""LSLSource against real pylsl outlets on loopback (in this process and in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from neurocast.streaming.engine.ring import RingBuffer
from neurocast.streaming.sources.base import Chunk, SourceError, local_clock
from neurocast.streaming.sources.lsl import LSLSource, describe_channels, use_loopback_config
from neurocast.streaming.sources.specs import LSLSpec

# liblsl reads its configuration once per process, at the first LSL call: keep discovery on
# this machine (no multicast needed) and isolate this run from other LSL users.
if "LSLAPICFG" not in os.environ:
    use_loopback_config(f"nc-test-{uuid.uuid4().hex[:8]}")

import pylsl  # after LSLAPICFG is set

pytestmark = pytest.mark.timeout(60)

SFREQ = 100.0


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _outlet(
    name: str,
    *,
    n_channels: int = 4,
    sfreq: float = SFREQ,
    stype: str = "EEG",
    source_id: str | None = None,
    fmt: str = "float32",
    labels: list[str] | None = None,
    types: list[str] | None = None,
    units: list[str] | None = None,
) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, stype, n_channels, sfreq, fmt, source_id or _uid("sid"))
    if labels is not None:
        info.set_channel_labels(labels)
    if types is not None:
        info.set_channel_types(types)
    if units is not None:
        info.set_channel_units(units)
    return pylsl.StreamOutlet(info)


def _spec(**kw: object) -> LSLSpec:
    kw.setdefault("resolve_timeout_s", 5.0)
    return LSLSpec.model_validate(kw)


def _read_until(source: LSLSource, n: int, timeout_s: float = 10.0) -> list[Chunk]:
    chunks: list[Chunk] = []
    deadline = time.monotonic() + timeout_s
    while sum(len(c.timestamps) for c in chunks) < n and time.monotonic() < deadline:
        chunk = source.read(0.2)
        if chunk is not None:
            chunks.append(chunk)
    return chunks


def _stack(chunks: list[Chunk]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([c.data for c in chunks]), np.concatenate([c.timestamps for c in chunks])


def test_resolve_by_name_type_and_source_id() -> None:
    name, stype, sid = _uid("resolve"), _uid("TYPE"), _uid("sid")
    outlet = _outlet(name, stype=stype, source_id=sid, labels=["a", "b", "c", "d"])
    for sel in ({"name": name}, {"type": stype}, {"source_id": sid}, {"name": name, "type": stype}):
        source = LSLSource(_spec(**sel))
        info = source.open()
        try:
            assert info.name == name
            assert info.source_id == sid
            assert info.ch_names == ["a", "b", "c", "d"]
            assert info.sfreq == SFREQ
            assert source.status == "running"
        finally:
            source.close()
        assert source.status == "stopped"
    del outlet


def test_resolve_timeout_lists_visible_streams() -> None:
    visible = _uid("visible")
    outlet = _outlet(visible)
    missing = _uid("missing")
    source = LSLSource(_spec(name=missing, resolve_timeout_s=0.5))
    with pytest.raises(SourceError, match=missing) as err:
        source.open()
    assert visible in str(err.value)
    assert source.status == "failed"
    with pytest.raises(SourceError, match="not open"):
        _ = source.stream_info
    del outlet


def test_data_arrives_exactly_with_metadata() -> None:
    name = _uid("exact")
    outlet = _outlet(
        name,
        labels=["Fz", "Cz", "MEG0111", "STI"],
        types=["eeg", "eeg", "mag", "stim"],
        units=["microvolts", "microvolts", "fT", "none"],
    )
    source = LSLSource(_spec(name=name))
    info = source.open()
    try:
        assert info.ch_names == ["Fz", "Cz", "MEG0111", "STI"]
        assert info.info.get_channel_types() == ["eeg", "eeg", "mag", "stim"]
        rng = np.random.default_rng(0)
        sent = rng.standard_normal((60, 4)).astype(np.float32)
        t0 = pylsl.local_clock()
        stamps = t0 + np.arange(60) / SFREQ
        for a in range(0, 60, 20):
            outlet.push_chunk(sent[a : a + 20], stamps[a : a + 20].tolist())
        chunks = _read_until(source, 60)
        data, ts = _stack(chunks)
        scale = np.array([1e-6, 1e-6, 1e-15, 1.0], dtype=np.float32)
        np.testing.assert_array_equal(ts, stamps)
        np.testing.assert_allclose(data, sent * scale, rtol=1e-6)
        for c in chunks:
            # LSL's clock-offset estimate is carried on every chunk (its size on one machine
            # is a measurement: bench/source_timing.py)
            assert np.isfinite(c.clock_offset)
            assert c.receipt_time >= t0
    finally:
        source.close()


def test_paused_reader_gets_only_the_newest_buffer() -> None:
    name = _uid("paused")
    outlet = _outlet(name, n_channels=2)
    source = LSLSource(_spec(name=name, buffer_s=1))
    source.open()
    try:
        n = int(3 * SFREQ)  # three seconds pushed while nobody reads
        values = np.repeat(np.arange(n, dtype=np.float32)[:, None], 2, axis=1)
        stamps = pylsl.local_clock() + np.arange(n) / SFREQ
        outlet.push_chunk(values, stamps.tolist())
        time.sleep(1.0)  # let the inlet's receiver thread take everything in
        got = []
        while (chunk := source.read(0.2)) is not None:
            got.append(chunk)
        data, _ = _stack(got)
        assert data[-1, 0] == n - 1  # the newest sample is there ...
        assert len(data) <= SFREQ * 1.1  # ... and no more than the one-second buffer
    finally:
        source.close()


@pytest.mark.parametrize("fmt", ["string", "int32"])
def test_marker_stream_attaches_markers(fmt: str) -> None:
    name, markers = _uid("data"), _uid("markers")
    outlet = _outlet(name, n_channels=1)
    m_info = pylsl.StreamInfo(markers, "Markers", 1, pylsl.IRREGULAR_RATE, fmt, _uid("msid"))
    m_outlet = pylsl.StreamOutlet(m_info)
    source = LSLSource(_spec(name=name, marker_stream=markers))
    source.open()
    try:
        t0 = pylsl.local_clock()
        m_outlet.push_sample(["face"] if fmt == "string" else [42], t0 + 0.05)
        m_outlet.push_sample(["house"] if fmt == "string" else [7], t0 + 0.15)
        outlet.push_chunk(np.zeros((20, 1), np.float32), (t0 + np.arange(20) / SFREQ).tolist())
        got: list = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            chunk = source.read(0.2)
            if chunk is not None:
                got.extend(chunk.markers)
            else:  # markers ride on the next chunk
                outlet.push_sample([0.0])
        want = ["face", "house"] if fmt == "string" else ["42", "7"]
        assert [m.value for m in got] == want
        np.testing.assert_allclose([m.timestamp for m in got], [t0 + 0.05, t0 + 0.15], atol=1e-3)
    finally:
        source.close()


def test_two_streams_merged_on_lsl_time() -> None:
    eeg, meg = _uid("eeg"), _uid("meg")
    o_eeg = _outlet(eeg, n_channels=2, labels=["Fz", "Cz"], types=["eeg", "eeg"])
    o_meg = _outlet(meg, n_channels=3, stype="MEG", units=["fT", "fT", "fT/cm"])
    source = LSLSource(_spec(name=eeg, merge_with=[{"name": meg}]))
    info = source.open()
    try:
        assert info.ch_names == ["Fz", "Cz", "ch1", "ch2", "ch3"]
        assert info.info.get_channel_types() == ["eeg", "eeg", "mag", "mag", "grad"]
        n = 50
        t0 = pylsl.local_clock()
        k = np.arange(n, dtype=np.float32)
        # the MEG device starts 10 samples later and stamps 2 ms off the EEG clock
        o_meg.push_chunk(np.stack([k[10:]] * 3, 1), (t0 + (k[10:]) / SFREQ + 0.002).tolist())
        o_eeg.push_chunk(np.stack([k, -k], 1), (t0 + k / SFREQ).tolist())
        chunks = _read_until(source, n - 1)
        data, ts = _stack(chunks)
        np.testing.assert_allclose(ts, t0 + k[: len(ts)] / SFREQ)
        assert np.isnan(data[:10, 2:]).all()  # no MEG sample near those EEG samples
        rows = np.arange(10, len(ts))
        np.testing.assert_array_equal(data[rows, 0], rows)
        np.testing.assert_allclose(data[rows, 2], rows * 1e-15, rtol=1e-6)  # same sample index
        np.testing.assert_allclose(data[rows, 4], rows * 1e-13, rtol=1e-6)
    finally:
        source.close()


def test_merging_streams_of_different_rates_is_refused() -> None:
    a, b = _uid("a"), _uid("b")
    oa, ob = _outlet(a), _outlet(b, sfreq=250.0)
    source = LSLSource(_spec(name=a, merge_with=[{"name": b}]))
    with pytest.raises(SourceError, match="one sampling rate"):
        source.open()
    del oa, ob


def test_irregular_data_stream_is_refused() -> None:
    name = _uid("irregular")
    outlet = _outlet(name, sfreq=pylsl.IRREGULAR_RATE)
    with pytest.raises(SourceError, match="irregular"):
        LSLSource(_spec(name=name)).open()
    del outlet


def test_clock_jumps_reach_the_ring_buffer_as_issues() -> None:
    name = _uid("jumps")
    outlet = _outlet(name, n_channels=1)
    source = LSLSource(_spec(name=name))
    info = source.open()
    try:
        t0 = pylsl.local_clock()
        stamps = t0 + np.arange(30) / SFREQ
        stamps[10:] += 5.0  # the device clock leaps 5 s forward ...
        stamps[20:] -= 8.0  # ... then 8 s back, inside one pushed chunk
        outlet.push_chunk(np.arange(10, dtype=np.float32)[:, None], stamps[:10].tolist())
        outlet.push_chunk(np.arange(10, 30, dtype=np.float32)[:, None], stamps[10:].tolist())
        ring = RingBuffer(info.n_channels, 1000, info.sfreq)
        for chunk in _read_until(source, 30):
            ring.write(chunk.data, chunk.timestamps)  # never refused
        assert ring.n_written == 30
        kinds = [(i.kind, i.index) for i in ring.issues]
        assert kinds == [("clock_jump_forward", 10), ("clock_jump_backward", 20)]
    finally:
        source.close()


def test_lost_outlet_without_source_id_is_found_again() -> None:
    name = _uid("nosid")
    info = pylsl.StreamInfo(name, "EEG", 1, SFREQ, "float32", "")
    outlet = pylsl.StreamOutlet(info)
    source = LSLSource(_spec(name=name, stall_after_s=0.3))
    source.open()
    try:
        outlet.push_chunk(np.ones((5, 1), np.float32))
        assert _read_until(source, 5)
        del outlet
        deadline = time.monotonic() + 10
        while source.status != "stalled" and time.monotonic() < deadline:
            source.read(0.1)
        assert source.status == "stalled"
        outlet = pylsl.StreamOutlet(pylsl.StreamInfo(name, "EEG", 1, SFREQ, "float32", ""))
        got: list[Chunk] = []
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:
            outlet.push_chunk(np.full((5, 1), 2.0, np.float32))
            chunk = source.read(0.2)
            if chunk is not None:
                got.append(chunk)
        assert got and np.all(got[-1].data == 2.0)
        assert source.status == "running"
    finally:
        source.close()


_PUSHER = """
import sys, time, numpy as np, pylsl
name, sid, start = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = pylsl.StreamOutlet(pylsl.StreamInfo(name, "EEG", 2, 100.0, "float32", sid))
print("ready", flush=True)
k = start
while True:
    out.push_chunk(np.array([[k, k + 1], [k + 1, k + 2]], np.float32))
    k += 2
    time.sleep(0.02)
"""


def _start_pusher(name: str, sid: str, start: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _PUSHER, name, sid, str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_killed_outlet_stalls_then_reconnects_by_source_id() -> None:
    name, sid = _uid("killed"), _uid("sid")
    proc = _start_pusher(name, sid, 0)
    source = LSLSource(_spec(name=name, stall_after_s=0.3))
    try:
        source.open()
        first, _ = _stack(_read_until(source, 10))
        assert first[-1, 0] < 100_000
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while source.status != "stalled" and time.monotonic() < deadline:
            source.read(0.1)
        assert source.status == "stalled"
        proc = _start_pusher(name, sid, 100_000)  # the device comes back, same source id
        deadline = time.monotonic() + 20
        back: list[Chunk] = []
        while time.monotonic() < deadline and not back:
            chunk = source.read(0.2)
            if chunk is not None and chunk.data[-1, 0] >= 100_000:
                back.append(chunk)
        assert back, "the source did not reconnect to the restarted outlet"
        assert source.status == "running"
        assert back[0].receipt_time <= local_clock()
    finally:
        proc.kill()
        proc.wait()
        source.close()


def test_describe_channels_defaults_and_units(caplog: pytest.LogCaptureFixture) -> None:
    info = pylsl.StreamInfo("d", "MEG", 3, 1000.0, "float32", "x")
    info.set_channel_units(["fT/cm", "-12", "furlongs"])
    channels, simulated = describe_channels(info.as_xml())
    assert [c.name for c in channels] == ["ch1", "ch2", "ch3"]
    assert [c.ch_type for c in channels] == ["grad", "mag", "mag"]
    assert [c.scale for c in channels] == [1e-13, 1e-12, 1.0]
    assert "furlongs" in caplog.text
    assert not simulated
    bare = pylsl.StreamInfo("e", "EEG", 2, 250.0, "float32", "y")
    bare.desc().append_child_value("simulated", "true")
    channels, simulated = describe_channels(bare.as_xml())
    assert [(c.name, c.ch_type, c.scale) for c in channels] == [
        ("ch1", "eeg", 1.0),
        ("ch2", "eeg", 1.0),
    ]
    assert simulated


def test_spec_needs_a_selector() -> None:
    with pytest.raises(ValueError, match="at least one of name, type or source_id"):
        LSLSpec.model_validate({"kind": "lsl"})
    with pytest.raises(ValueError, match="at least one"):
        LSLSpec.model_validate({"kind": "lsl", "name": "x", "merge_with": [{}]})
