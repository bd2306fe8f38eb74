"""Session recording to XDF, read back with pyxdf (the reference reader), replayed over LSL and
exported to BIDS (read back with mne-bids)."""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mne
import numpy as np
import pytest
import pyxdf

from neurocast.streaming.engine.results import Result
from neurocast.streaming.recording.read import XDFFormatError, load_xdf, scan_xdf
from neurocast.streaming.recording.recorder import SessionRecorder
from neurocast.streaming.recording.tap import RecordingSource
from neurocast.streaming.recording.xdf import BOUNDARY_UUID, XDFWriter, varlen
from neurocast.streaming.sources.base import Chunk, Marker, StreamInfo
from neurocast.streaming.sources.lsl.config import use_loopback_config

# liblsl reads its configuration at the first LSL call: keep discovery on this machine
if "LSLAPICFG" not in os.environ:
    use_loopback_config(f"nc-rec-{uuid.uuid4().hex[:8]}")

pytestmark = pytest.mark.timeout(120)

SFREQ = 100.0
REPO = Path(__file__).resolve().parents[1]


def _stream(simulated: bool = False) -> StreamInfo:
    """3 MEG channels (with coil types and orientations), 3 EEG channels with positions."""
    info = mne.create_info(
        ["MEG0111", "MEG0112", "MEG0113", "Fz", "Cz", "Pz"],
        SFREQ,
        ["mag", "grad", "grad", "eeg", "eeg", "eeg"],
    )
    rng = np.random.default_rng(1)
    with info._unlock():
        for ch in info["chs"]:
            ch["loc"][:12] = rng.normal(0, 0.05, 12)
        info["chs"][0]["coil_type"] = 3024
        info["chs"][1]["coil_type"] = info["chs"][2]["coil_type"] = 3012
        info["description"] = "SIMULATED test stream" if simulated else "test stream"
    return StreamInfo("dev", info, simulated=simulated, source_id="dev-1")


def _chunks(n_chunks: int, n: int = 25, offset: float = 0.0, t0: float = 1000.0) -> list[Chunk]:
    """Chunks with jittered timestamps, changing clock offsets and unicode markers."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(n_chunks):
        idx = np.arange(k * n, (k + 1) * n)
        ts = t0 + idx / SFREQ + rng.uniform(-1e-4, 1e-4, n)
        data = (rng.standard_normal((n, 6)) * 1e-12).astype(np.float32)
        data[:, 3:] *= 1e6  # EEG in volts
        markers = [Marker(float(ts[3]), f"image/é{k}\ttab")] if k % 3 == 0 else []
        out.append(
            Chunk(data, ts, receipt_time=float(ts[-1]), clock_offset=offset, markers=markers)
        )
    return out


def _concat(chunks: list[Chunk]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([c.data for c in chunks]), np.concatenate([c.timestamps for c in chunks])


def _by_name(streams: list[dict]) -> dict[str, dict]:
    return {s["info"]["name"][0]: s for s in streams}


def _record(
    path: Path, chunks: list[Chunk], results: Sequence[Result] = (), **kw: Any
) -> SessionRecorder:
    rec = SessionRecorder(path, **kw)
    rec.start()
    key = rec.add_stream(_stream(simulated=True))
    for c in chunks:
        assert rec.write_chunk(c, key)
    for r in results:
        assert rec.write_result(r)
    status = rec.stop()
    assert status.state == "stopped", status.reason
    return rec


def _results() -> list[Result]:
    out: list[Result] = []
    for k in range(4):
        t = 1000.0 + 0.25 * (k + 1)
        out.append(
            Result(
                "probabilities",
                "clf",
                k,
                t,
                {"classes": ["rest", "speech"], "probabilities": [0.25 + 0.1 * k, 0.75 - 0.1 * k]},
                clock_offset=0.5,
            )
        )
        hits = [{"image_id": f"img{k}", "label": "dog", "score": 0.5, "thumbnail_url": "/x"}]
        out.append(Result("retrieval", "ret", k, t, {"embedding": np.ones(3), "topk": hits}))
        # 10-sample windows 5 samples apart at 100 Hz: consecutive windows overlap by half
        tt = 1000.0 + 0.05 * (k + 1)
        signal = np.arange(20, dtype=np.float32).reshape(2, 10) + 5 * k
        payload = {"ch_names": ["M1", "M2"], "ch_types": ["mag", "mag"], "sfreq_hz": 100.0}
        out.append(Result("translation", "tr", k, tt, {**payload, "signal": signal}))
    return out


# ---------------------------------------------------------------------------- format


def test_varlen_and_chunk_bytes(tmp_path: Path) -> None:
    assert varlen(255) == b"\x01\xff"
    assert varlen(256) == b"\x04" + struct.pack("<I", 256)
    assert varlen(2**32) == b"\x08" + struct.pack("<Q", 2**32)
    w = XDFWriter(tmp_path / "a.xdf")
    sid = w.add_stream(
        name="m", type="Markers", channel_count=1, nominal_srate=0, channel_format="string"
    )
    w.write_samples(sid, [2.5], [["hé"]])
    w.write_clock_offset(sid, 1.0, -0.25)
    w.close()
    raw = (tmp_path / "a.xdf").read_bytes()
    assert raw[:4] == b"XDF:"
    # the Samples chunk: [1][len][3,0][id=1][1][1 sample][8][2.5][1][3 bytes]['hé']
    text = "hé".encode()
    body = struct.pack("<I", 1) + b"\x01\x01\x08" + struct.pack("<d", 2.5) + b"\x01\x03" + text
    assert bytes([1, len(body) + 2]) + b"\x03\x00" + body in raw
    assert b"\x01\x16\x04\x00" + struct.pack("<Idd", 1, 1.0, -0.25) in raw
    assert raw.endswith(b"\x01\x12\x05\x00" + BOUNDARY_UUID)
    assert not scan_xdf(tmp_path / "a.xdf").truncated
    with pytest.raises(FileExistsError):
        XDFWriter(tmp_path / "a.xdf")


def test_raw_markers_offsets_and_metadata_read_back_exactly(tmp_path: Path) -> None:
    chunks = _chunks(12)
    # the clock offset changes half way (LSL re-estimated it)
    chunks = [
        Chunk(c.data, c.timestamps, c.receipt_time, 0.1 if k < 6 else 0.1002, c.markers)
        for k, c in enumerate(chunks)
    ]
    path = tmp_path / "s.xdf"
    _record(path, chunks, clock_offset_interval_s=1.0)
    streams, header = pyxdf.load_xdf(path, synchronize_clocks=False, dejitter_timestamps=False)
    s = _by_name(streams)
    assert set(s) == {"dev", "dev-markers"}
    data, ts = _concat(chunks)
    raw = s["dev"]
    assert raw["time_series"].dtype == np.float32
    np.testing.assert_array_equal(raw["time_series"], data)
    np.testing.assert_array_equal(raw["time_stamps"], ts)
    info = raw["info"]
    assert info["type"] == ["MEG"] and float(info["nominal_srate"][0]) == SFREQ
    assert info["desc"][0]["simulated"] == ["true"]
    chans = info["desc"][0]["channels"][0]["channel"]
    ref = _stream().info
    assert [c["label"][0] for c in chans] == ref["ch_names"]
    assert [c["type"][0] for c in chans] == ["mag", "grad", "grad", "eeg", "eeg", "eeg"]
    assert [c["unit"][0] for c in chans] == ["T", "T/m", "T/m", "V", "V", "V"]
    for c, ch in zip(chans, ref["chs"], strict=True):
        xyz = [float(c["location"][0][a][0]) for a in "XYZ"]
        np.testing.assert_allclose(xyz, ch["loc"][:3] * 1e3, rtol=1e-12)
    # markers: strings (unicode, tabs) with their own timestamps
    m = s["dev-markers"]
    expected = [mk for c in chunks for mk in c.markers]
    assert [v[0] for v in m["time_series"]] == [mk.value for mk in expected]
    np.testing.assert_array_equal(m["time_stamps"], [mk.timestamp for mk in expected])
    # clock offsets: at the start, on change, and every clock_offset_interval_s
    times, values = np.array(raw["clock_times"]), np.array(raw["clock_values"])
    assert values[0] == 0.1 and values[-1] == 0.1002 and set(values) == {0.1, 0.1002}
    assert np.all(np.diff(times) <= 1.0 + 0.25 + 1e-9)  # one chunk past the interval at most
    assert times[0] == ts[24] and m["clock_values"] == raw["clock_values"]
    footer = raw["footer"]["info"]
    assert int(footer["sample_count"][0]) == ts.size
    assert float(footer["first_timestamp"][0]) == ts[0]
    assert float(footer["last_timestamp"][0]) == ts[-1]
    assert header["info"]["recorder"] == ["neurocast"]
    # with clock synchronisation pyxdf moves the samples onto the recorder's clock
    synced, _ = pyxdf.load_xdf(path, synchronize_clocks=True, dejitter_timestamps=False)
    shift = _by_name(synced)["dev"]["time_stamps"] - ts
    # (pyxdf fits a line through the offsets: the shift is that line at each sample)
    coef = np.linalg.lstsq(np.c_[np.ones(times.size), times], values, rcond=None)[0]
    np.testing.assert_allclose(shift, coef[0] + coef[1] * ts, atol=1e-9)
    assert shift.min() > 0.0999 and shift.max() < 0.1003


def test_model_outputs_are_streams(tmp_path: Path) -> None:
    path = tmp_path / "r.xdf"
    _record(path, _chunks(4), _results())
    s = _by_name(pyxdf.load_xdf(path, synchronize_clocks=False, dejitter_timestamps=False)[0])
    probs = s["clf-probabilities"]
    assert probs["info"]["channel_format"] == ["float32"] and probs["info"]["nominal_srate"] == [
        "0.0"
    ]
    labels = [c["label"][0] for c in probs["info"]["desc"][0]["channels"][0]["channel"]]
    assert labels == ["rest", "speech"]
    expected = np.array([[0.25 + 0.1 * k, 0.75 - 0.1 * k] for k in range(4)], dtype=np.float32)
    np.testing.assert_array_equal(probs["time_series"], expected)
    np.testing.assert_array_equal(probs["time_stamps"], 1000.0 + 0.25 * np.arange(1, 5))
    assert probs["clock_values"] == [0.5]
    ret = s["ret-retrieval"]
    hits = [json.loads(v[0])["topk"] for v in ret["time_series"]]
    assert hits == [[{"image_id": f"img{k}", "label": "dog", "score": 0.5}] for k in range(4)]
    # translated MEG: overlapping windows become one signal, each sample once
    tr = s["tr-translation"]
    assert float(tr["info"]["nominal_srate"][0]) == 100.0
    t = tr["time_stamps"]
    assert t.size == 10 + 3 * 5
    np.testing.assert_allclose(np.diff(t), 0.01, atol=1e-9)
    assert t[-1] == pytest.approx(1000.2, abs=1e-9)
    last = np.arange(20, dtype=np.float32).reshape(2, 10) + 15
    np.testing.assert_array_equal(tr["time_series"][-10:], last.T)
    np.testing.assert_array_equal(tr["time_series"][:10], np.arange(20).reshape(2, 10).T)


# ---------------------------------------------------------------------------- crashes


_CHILD = textwrap.dedent(
    """
    import sys, time, numpy as np
    sys.path.insert(0, {tests!r})
    from test_recording import _chunks, _stream
    from neurocast.streaming.recording.recorder import SessionRecorder
    rec = SessionRecorder({path!r}, flush_interval_s=0.2)
    rec.start()
    key = rec.add_stream(_stream())
    chunks = _chunks(4000)
    mode = {mode!r}
    for k, c in enumerate(chunks):
        accepted = rec.write_chunk(c, key)
        if mode == "kill" and k == 40:
            while rec.status.n_samples_durable < 41 * 25:
                time.sleep(0.01)
            print("durable", rec.status.n_samples_durable, flush=True)
        if mode == "full" or k > 40:
            time.sleep(0.002)  # a few batches fit under the size limit
        if mode == "full" and rec.status.state == "failed":
            break
    if mode == "full":
        while rec.status.state != "failed":
            time.sleep(0.01)
        # the caller keeps going: later writes are refused, nothing raises
        later = [rec.write_chunk(c, key) for c in chunks[:5]]
        st = rec.stop()
        print("status", st.state, st.n_samples_durable, st.bytes_written, all(not a for a in later))
        print("reason", st.reason, flush=True)
    time.sleep(60)
    """
)


def _child(
    tmp_path: Path, mode: str, preexec: Callable[[], None] | None = None
) -> subprocess.Popen[str]:
    code = _CHILD.format(tests=str(REPO / "tests"), path=str(tmp_path / "c.xdf"), mode=mode)
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=preexec,
    )


def test_kill9_keeps_everything_flushed(tmp_path: Path) -> None:
    proc = _child(tmp_path, "kill")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line and line[0] == "durable", proc.stderr.read() if proc.stderr else ""
        durable = int(line[1])
        time.sleep(0.5)  # keep writing (and flushing) for a while, then die mid-way
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    streams, _ = pyxdf.load_xdf(
        tmp_path / "c.xdf", synchronize_clocks=False, dejitter_timestamps=False
    )
    raw = _by_name(streams)["dev"]
    data, ts = _concat(_chunks(4000))
    n = raw["time_stamps"].size
    assert durable <= n < ts.size
    assert n % 25 == 0  # whole chunks only
    np.testing.assert_array_equal(raw["time_series"], data[:n])
    np.testing.assert_array_equal(raw["time_stamps"], ts[:n])
    assert not scan_xdf(tmp_path / "c.xdf").has_footers


def test_file_size_limit_stops_recording_cleanly(tmp_path: Path) -> None:
    import resource

    limit = 200_000

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = _child(tmp_path, "full", preexec=small_files)
    try:
        assert proc.stdout is not None
        status = proc.stdout.readline().split()
        reason = proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait()
    assert status[:2] == ["status", "failed"], proc.stderr.read() if proc.stderr else status
    durable, written, refused = int(status[2]), int(status[3]), status[4] == "True"
    assert refused
    assert "file size limit" in reason and "EFBIG" in reason and f"byte {written}" in reason
    path = tmp_path / "c.xdf"
    assert path.stat().st_size == written <= limit
    scan = scan_xdf(path)
    assert not scan.truncated and scan.valid_end == written
    raw = _by_name(pyxdf.load_xdf(path, dejitter_timestamps=False)[0])["dev"]
    data, _ = _concat(_chunks(4000))
    assert raw["time_stamps"].size == durable > 0
    np.testing.assert_array_equal(raw["time_series"], data[:durable])


def test_disk_full_fails_with_reason_and_file_stays_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import neurocast.streaming.recording.xdf as xdf_module

    real = os.pwrite
    budget = {"bytes": 150_000}

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if budget["bytes"] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = min(len(data), budget["bytes"])
        budget["bytes"] -= n
        return real(fd, bytes(data[:n]), offset)  # a partial write, then ENOSPC

    monkeypatch.setattr(xdf_module.os, "pwrite", pwrite)
    failures: list[str] = []
    rec = SessionRecorder(tmp_path / "f.xdf", flush_interval_s=0.05, on_failure=failures.append)
    rec.start()
    key = rec.add_stream(_stream())
    chunks = _chunks(2000)
    for c in chunks:
        rec.write_chunk(c, key)
        if rec.status.state == "failed":
            break
        time.sleep(0.001)
    st = rec.stop()
    assert st.state == "failed" and "the disk is full (ENOSPC)" in (st.reason or "")
    assert failures == [st.reason]
    assert not rec.write_chunk(chunks[0], key)
    assert (tmp_path / "f.xdf").stat().st_size == st.bytes_written < 150_000
    raw = _by_name(pyxdf.load_xdf(tmp_path / "f.xdf")[0])["dev"]
    data, _ = _concat(chunks)
    assert raw["time_stamps"].size == st.n_samples_durable > 0
    np.testing.assert_array_equal(raw["time_series"], data[: st.n_samples_durable])


def _chunk_starts(path: Path) -> list[tuple[int, int, int]]:
    """(offset, tag, stream id or 0) of every chunk of a complete file."""
    buf = path.read_bytes()
    pos, out = 4, []
    while pos < len(buf):
        nb = buf[pos]
        fmt = {1: "<B", 4: "<I", 8: "<Q"}[nb]
        length = struct.unpack_from(fmt, buf, pos + 1)[0]
        tag = struct.unpack_from("<H", buf, pos + 1 + nb)[0]
        sid = struct.unpack_from("<I", buf, pos + 3 + nb)[0] if tag in (2, 3, 4, 6) else 0
        out.append((pos, tag, sid))
        pos += 1 + nb + length
    return out


def test_truncated_mid_chunk(tmp_path: Path) -> None:
    chunks = _chunks(8)
    full = tmp_path / "full.xdf"
    _record(full, chunks, flush_interval_s=1.0)
    buf = full.read_bytes()
    starts = _chunk_starts(full)
    raw_samples = [p for p, tag, sid in starts if tag == 3 and sid == 1]
    data, ts = _concat(chunks)
    last = raw_samples[-2]
    offsets = [p for p, tag, _ in starts if tag == 4]
    header2 = [p for p, tag, _ in starts if tag == 2][1]
    # cut inside a Samples chunk's values, its length, its tag; a clock offset; a header
    cuts = [
        (last, last + 40),
        (last, last + 1),
        (last, last + 3),
        (offsets[-1], offsets[-1] + 10),
        (header2, header2 + 30),
    ]
    for start, cut in cuts:
        path = tmp_path / f"cut{cut}.xdf"
        path.write_bytes(buf[:cut])
        scan = scan_xdf(path)
        assert scan.truncated_at == start and scan.valid_end == start
        assert f"truncated at byte {start}" in scan.message()
        streams, _, _ = load_xdf(path, synchronize_clocks=False, dejitter_timestamps=False)
        got = _by_name(streams).get("dev")
        n = 0 if got is None else got["time_stamps"].size
        # everything before the cut is used: every raw chunk that was complete
        assert n == 25 * sum(1 for p in raw_samples if p < start)
        if got is not None:
            np.testing.assert_array_equal(got["time_series"], data[:n])
            np.testing.assert_array_equal(got["time_stamps"], ts[:n])
    # an unfinished batch (its first byte not yet written) reads as the end of the file
    path = tmp_path / "hole.xdf"
    path.write_bytes(buf[:last] + b"\x00" + buf[last + 1 :])
    scan = scan_xdf(path)
    assert scan.truncated_at == last and "unfinished write" in (scan.reason or "")
    with pytest.raises(XDFFormatError):
        (tmp_path / "junk.xdf").write_bytes(b"not xdf")
        scan_xdf(tmp_path / "junk.xdf")


# ---------------------------------------------------------------------------- BIDS, CLI


def _eeg_stream() -> StreamInfo:
    info = mne.create_info(["Fz", "Cz", "Pz", "Oz"], 250.0, "eeg")
    info.set_montage("standard_1020")
    return StreamInfo("eegdev", info, source_id="eeg-1")


def test_export_bids_meg_and_eeg_read_back(tmp_path: Path) -> None:
    import mne_bids

    from neurocast.clients.cli.main import main

    # MEG + EEG in one stream (FIF), with markers and model outputs
    chunks = _chunks(8)
    _record(tmp_path / "meg.xdf", chunks, _results())
    root = tmp_path / "bids"
    args = ["export-bids", str(tmp_path / "meg.xdf"), "--bids-root", str(root)]
    assert main([*args, "--subject", "01", "--task", "sim"]) == 0
    path = mne_bids.BIDSPath(subject="01", task="sim", datatype="meg", root=root)
    raw = mne_bids.read_raw_bids(path, verbose="error")
    data, ts = _concat(chunks)
    assert raw.ch_names == _stream().ch_names
    np.testing.assert_array_equal(raw.get_data().astype(np.float32), data.T)
    ref = _stream().info
    assert [ch["coil_type"] for ch in raw.info["chs"][:3]] == [3024, 3012, 3012]
    np.testing.assert_allclose(raw.info["chs"][1]["loc"], ref["chs"][1]["loc"], atol=1e-7)
    markers = [m for c in chunks for m in c.markers]
    # BIDS TSV cells cannot hold tabs: they become spaces
    assert list(raw.annotations.description) == [m.value.replace("\t", " ") for m in markers]
    expected_onsets = [np.argmin(np.abs(ts - m.timestamp)) / SFREQ for m in markers]
    np.testing.assert_allclose(raw.annotations.onset, expected_onsets, atol=1e-9)
    deriv = root / "derivatives" / "neurocast" / "sub-01" / "meg"
    tsv = (deriv / "sub-01_task-sim_desc-clfprobabilities_decoding.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["onset", "timestamp", "rest", "speech"]
    assert len(tsv) == 5
    row = tsv[1].split("\t")
    # onsets on the recorder's clock, like events.tsv (the outputs' offset is 0.5 s)
    assert float(row[0]) == pytest.approx(1000.25 + 0.5 - ts[0], abs=1e-5)
    assert float(row[2]) == pytest.approx(0.25, abs=1e-7)
    assert (deriv / "sub-01_task-sim_desc-trtranslation_decoding.tsv").exists()

    # EEG only (EDF, 16-bit: compared at its resolution)
    rng = np.random.default_rng(3)
    rec = SessionRecorder(tmp_path / "eeg.xdf")
    rec.start()
    rec.add_stream(_eeg_stream())
    eeg = (rng.standard_normal((500, 4)) * 20e-6).astype(np.float32)
    t = 50.0 + np.arange(500) / 250.0
    rec.write_chunk(Chunk(eeg, t, 0.0, markers=[Marker(t[100], "stim/1")]))
    rec.stop()
    assert main(["export-bids", str(tmp_path / "eeg.xdf"), "--bids-root", str(root),
                 "--subject", "02", "--task", "sim"]) == 0  # fmt: skip
    path = mne_bids.BIDSPath(subject="02", task="sim", datatype="eeg", root=root)
    raw = mne_bids.read_raw_bids(path, verbose="error")
    assert raw.ch_names == ["Fz", "Cz", "Pz", "Oz"] and raw.info["sfreq"] == 250.0
    resolution = (eeg.max() - eeg.min()) / 2**15
    np.testing.assert_allclose(raw.get_data(), eeg.T, atol=resolution)
    assert list(raw.annotations.description) == ["stim/1"]
    assert raw.annotations.onset[0] == pytest.approx(100 / 250.0, abs=1e-6)


def test_cli_record_and_truncated_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import mne_bids

    from neurocast.clients.cli.main import main

    out = tmp_path / "sim.xdf"
    spec = '{"kind": "simulator", "modality": "both", "realtime": false, "duration_s": 2}'
    assert main(["record", spec, "--out", str(out)]) == 0
    assert main(["record", spec, "--out", str(out)]) == 2  # never overwrites silently
    assert main(["record", "nonsense:", "--out", str(tmp_path / "x.xdf")]) == 2
    s = _by_name(pyxdf.load_xdf(out, dejitter_timestamps=False)[0])
    raw = s["neurocast simulator (SIMULATED)"]
    assert raw["time_series"].shape == (2000, 370)
    np.testing.assert_allclose(np.diff(raw["time_stamps"]), 1e-3, atol=1e-9)
    assert raw["info"]["desc"][0]["simulated"] == ["true"]
    assert len(s["neurocast simulator (SIMULATED)-markers"]["time_series"]) >= 1
    # cut inside the last raw Samples chunk
    starts = [p for p, tag, sid in _chunk_starts(out) if tag == 3 and sid == 1]
    cut = starts[-3] + 100
    bad = tmp_path / "cut.xdf"
    bad.write_bytes(out.read_bytes()[:cut])
    capsys.readouterr()
    assert main(["export-bids", str(bad), "--bids-root", str(tmp_path / "b"),
                 "--subject", "01", "--task", "t"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert f"truncated at byte {starts[-3]}" in err
    path = mne_bids.BIDSPath(subject="01", task="t", datatype="meg", root=tmp_path / "b")
    streams, _, _ = load_xdf(bad, dejitter_timestamps=False)
    n = _by_name(streams)["neurocast simulator (SIMULATED)"]["time_stamps"].size
    assert 0 < n < 2000
    assert mne_bids.read_raw_bids(path, verbose="error").n_times == n


def test_replay_xdf_over_lsl_gives_the_same_samples(tmp_path: Path) -> None:
    import pylsl

    from neurocast.streaming.recording.replay import XDFPlayer
    from neurocast.streaming.sources.simulator.source import SimulatorSource
    from neurocast.streaming.sources.specs import SimulatorSpec

    path = tmp_path / "sim.xdf"
    rec = SessionRecorder(path)
    rec.start()
    spec = SimulatorSpec(modality="eeg", realtime=False, duration_s=1.5, chunk_s=0.05)
    source = RecordingSource(SimulatorSource(spec), rec)
    source.open()
    while source.read(0.1) is not None:
        pass
    source.close()
    rec.stop()
    streams, _, _ = load_xdf(path, synchronize_clocks=True, dejitter_timestamps=True)
    recorded = _by_name(streams)
    prefix = f"r{uuid.uuid4().hex[:6]}-"
    player = XDFPlayer(path, name_prefix=prefix, wait_for_consumer=True, linger_s=2.0)
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(player.run()), daemon=True)
    thread.start()
    got: dict[str, tuple[list, list]] = {}
    inlets = {}
    for name in recorded:
        found = pylsl.resolve_byprop("name", prefix + name, timeout=10.0)
        assert found, f"no outlet {prefix + name}"
        inlets[name] = pylsl.StreamInlet(found[0], max_buflen=30, processing_flags=0)
        inlets[name].open_stream(timeout=5.0)
        got[name] = ([], [])
    deadline = time.monotonic() + 30
    raw_name = "neurocast simulator (SIMULATED)"
    while time.monotonic() < deadline:
        for name, inlet in inlets.items():
            values, stamps = inlet.pull_chunk(timeout=0.05)
            got[name][0].extend(values)
            got[name][1].extend(stamps)
        if len(got[raw_name][1]) >= 1500 and not thread.is_alive():
            break
    thread.join(10)
    assert done == [sum(len(s["time_stamps"]) for s in streams)]
    vals = np.array(got[raw_name][0], dtype=np.float32)
    np.testing.assert_array_equal(vals, recorded[raw_name]["time_series"])
    t_raw = np.array(got[raw_name][1])
    ref = recorded[raw_name]["time_stamps"]
    np.testing.assert_allclose(t_raw - t_raw[0], ref - ref[0], atol=1e-6)
    mk = raw_name + "-markers"
    assert [v[0] for v in got[mk][0]] == [v[0] for v in recorded[mk]["time_series"]]
    np.testing.assert_allclose(
        np.array(got[mk][1]) - t_raw[0], recorded[mk]["time_stamps"] - ref[0], atol=1e-6
    )
    # channel metadata travels with the outlet
    desc = inlets[raw_name].info().desc().child("channels").child("channel")
    first = recorded[raw_name]["info"]["desc"][0]["channels"][0]["channel"][0]
    assert desc.child_value("label") == first["label"][0]
    assert desc.child_value("unit") == "V" and desc.child_value("type") == "eeg"


def test_replay_reports_truncation(tmp_path: Path) -> None:
    from neurocast.streaming.recording.replay import XDFPlayer

    chunks = _chunks(6)
    path = tmp_path / "t.xdf"
    _record(path, chunks)
    starts = [p for p, tag, sid in _chunk_starts(path) if tag == 3 and sid == 1]
    path.write_bytes(path.read_bytes()[: starts[-2] + 20])
    player = XDFPlayer(path)
    streams = player.load()
    assert player.scan is not None and player.scan.truncated_at == starts[-2]
    assert f"truncated at byte {starts[-2]}" in player.scan.message()
    assert _by_name(streams)["dev"]["time_series"].shape[0] > 0
