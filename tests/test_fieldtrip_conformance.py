"""Conformance of our FieldTrip buffer with clients nobody here wrote.

- mne-realtime's ``FieldTripClient`` reads from our server, during a replay of a real
  Neuromag recording written by :class:`FieldTripWriter`, exactly the samples and channel
  names that were put; our own source reads the same replay with the exact ``mne.Info``.
- Our client reads exactly what mne-realtime's bundled ``FieldTrip.py`` puts into our server.
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import warnings
from pathlib import Path

import mne
import numpy as np
import pytest

from neurocast.streaming.sources.base import StreamInfo
from neurocast.streaming.sources.fieldtrip.client import FieldTripClient
from neurocast.streaming.sources.fieldtrip.events import Event
from neurocast.streaming.sources.fieldtrip.protocol import DataType
from neurocast.streaming.sources.fieldtrip.server import FieldTripServer
from neurocast.streaming.sources.fieldtrip.source import FieldTripSource
from neurocast.streaming.sources.fieldtrip.writer import FieldTripWriter
from neurocast.streaming.sources.specs import FieldTripSpec

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # "MNE-realtime is discontinued"
    from mne_realtime import FieldTripClient as MneRealtimeClient
    from mne_realtime.externals import FieldTrip as ReferencePy

pytestmark = [
    pytest.mark.timeout(90),
    # mne-realtime warns that it guesses the channel info from the labels
    pytest.mark.filterwarnings("ignore:Info dictionary not provided:RuntimeWarning"),
]

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLE = DATA / "meg_eeg" / "sample_audvis_raw.fif"


@pytest.mark.shared_data
@pytest.mark.skipif(not SAMPLE.exists(), reason=f"real recording not found: {SAMPLE} is absent")
def test_mne_realtime_and_our_source_read_a_replay_exactly():
    raw = mne.io.read_raw_fif(SAMPLE, preload=True, verbose="error")
    sfreq = raw.info["sfreq"]
    put = raw.get_data().T.astype(np.float32)  # what the writer sends (float32, as neuromag2ft)
    n_times, chunk = put.shape[0], 15
    last = n_times - 2  # mne-realtime waits for one sample more than it reads

    with FieldTripServer().serve_in_thread() as srv:
        port = srv.port
        writer = FieldTripWriter("127.0.0.1", port)
        writer.connect()
        writer.put_header(StreamInfo("sample_audvis", raw.info))
        writer.put_data(put[:chunk])

        theirs = MneRealtimeClient(
            host="127.0.0.1", port=port, tmin=0, tmax=last / sfreq, buffer_size=60, wait_max=5
        )
        theirs.__enter__()
        received: list[np.ndarray] = []
        theirs.register_receive_callback(received.append)
        theirs.start_receive_thread(len(raw.ch_names))

        ours = FieldTripSource(FieldTripSpec(port=port, open_timeout_s=5.0))
        stream = ours.open()

        def replay() -> None:  # four times real time, in 50 ms chunks
            t0 = time.monotonic()
            for a in range(chunk, n_times, chunk):
                time.sleep(max(0.0, t0 + a / sfreq / 4 - time.monotonic()))
                writer.put_data(put[a : a + chunk])

        replayer = threading.Thread(target=replay)
        replayer.start()
        chunks = []
        have = chunk
        deadline = time.monotonic() + 30
        while have < n_times and time.monotonic() < deadline:
            c = ours.read(0.2)
            if c is not None:
                chunks.append(c)
                have += c.data.shape[0]
        replayer.join(30)
        deadline = time.monotonic() + 30
        while sum(b.shape[1] for b in received) < last + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        epoch = theirs.get_data_as_epoch(n_samples=n_times).get_data()
        theirs.stop_receive_thread()
        theirs.__exit__(None, None, None)
        ours.close()
        writer.close()

    # mne-realtime: exactly the channel names and samples put
    assert theirs.ch_names == raw.ch_names
    assert theirs.info["ch_names"] == raw.ch_names
    assert theirs.info.get_channel_types() == raw.get_channel_types()
    streamed = np.concatenate(received, axis=1)
    assert streamed.dtype == np.float32
    np.testing.assert_array_equal(streamed, put[: last + 1].T)
    np.testing.assert_array_equal(epoch[0], put.T.astype(np.float64))

    # our source: the exact info from the Neuromag header chunk, and the samples after open()
    assert stream.ch_names == raw.ch_names and stream.sfreq == sfreq and not stream.simulated
    for a, b in zip(stream.info["chs"], raw.info["chs"], strict=True):
        assert (a["coil_type"], a["kind"], a["unit"]) == (b["coil_type"], b["kind"], b["unit"])
        np.testing.assert_array_equal(a["loc"], b["loc"])
    assert len(stream.info["projs"]) == len(raw.info["projs"])
    assert stream.info["dev_head_t"] == raw.info["dev_head_t"]
    np.testing.assert_array_equal(np.concatenate([c.data for c in chunks]), put[chunk:])


def _serialize_bytes(original):
    # FieldTrip.py's serialize() builds Python 2 str payloads; keep its type codes, send bytes
    def serialize(a):
        code, buf = original(a)
        if isinstance(a, str):
            return code, a.encode()
        if isinstance(a, np.ndarray) and code != ReferencePy.DATATYPE_UNKNOWN:
            return code, np.ascontiguousarray(a).tobytes()
        return code, buf

    return serialize


def _event_serialize(self):
    # as FieldTrip.Event.serialize, with whole-number element counts (Python 3 division)
    type_type, type_buf = ReferencePy.serialize(self.type)
    value_type, value_buf = ReferencePy.serialize(self.value)
    head = struct.pack(
        "IIIIIiiI",
        type_type,
        len(type_buf) // ReferencePy.wordSize[type_type],
        value_type,
        len(value_buf) // ReferencePy.wordSize[value_type],
        int(self.sample),
        int(self.offset),
        int(self.duration),
        len(type_buf) + len(value_buf),
    )
    return head + type_buf + value_buf


def _put_header(self, nChannels, fSample, dataType, labels=None, chunks=None):
    # as FieldTrip.Client.putHeader, concatenating bytes instead of str
    extras = b""
    if labels is not None:
        names = b"".join(label.encode() + b"\0" for label in labels[:nChannels])
        extras = struct.pack("II", ReferencePy.CHUNK_CHANNEL_NAMES, len(names)) + names
    for chunk_type, chunk_data in chunks or ():
        extras += struct.pack("II", chunk_type, len(chunk_data)) + chunk_data
    hdef = struct.pack("IIIfII", nChannels, 0, 0, fSample, dataType, len(extras))
    self.sendRaw(struct.pack("HHI", ReferencePy.VERSION, ReferencePy.PUT_HDR, len(hdef + extras)))
    self.sendRaw(hdef + extras)
    status, _, _ = self.receiveResponse()
    if status != ReferencePy.PUT_OK:
        raise OSError("Header could not be written")


@pytest.fixture
def reference_py(monkeypatch):
    """mne-realtime's FieldTrip.py with its Python 2 writers patched to send bytes."""
    monkeypatch.setattr(ReferencePy, "serialize", _serialize_bytes(ReferencePy.serialize))
    monkeypatch.setattr(ReferencePy.Event, "serialize", _event_serialize)
    monkeypatch.setattr(ReferencePy.Client, "putHeader", _put_header)
    return ReferencePy


def test_our_client_reads_exactly_what_fieldtrip_py_put(reference_py):
    rng = np.random.default_rng(7)
    names = [f"MEG {i:03d}1" for i in range(1, 7)] + ["EEG 001", "STI 014"]
    x = rng.standard_normal((120, len(names))).astype(np.float32)
    with FieldTripServer().serve_in_thread() as srv:
        ref = reference_py.Client()
        ref.connect("127.0.0.1", srv.port)
        ref.putHeader(len(names), 512.0, reference_py.DATATYPE_FLOAT32, labels=names)
        for a in range(0, 120, 40):
            ref.putData(x[a : a + 40])
        for sample, value in [(5, "face"), (17, 3)]:
            ev = reference_py.Event()
            ev.type, ev.value, ev.sample, ev.offset, ev.duration = "stim", value, sample, 1, 2
            ref.putEvents(ev)
        # the reference client reads its own writes back through our server
        header = ref.getHeader()
        assert (header.nChannels, header.nSamples, header.nEvents) == (len(names), 120, 2)
        assert header.labels == names
        np.testing.assert_array_equal(ref.getData([10, 49]), x[10:50])
        assert ref.wait(119, 2**32 - 1, 10_000) == (120, 2)
        ref.disconnect()

        async def read():
            async with FieldTripClient("127.0.0.1", srv.port) as ft:
                return await ft.get_header(), await ft.get_data(), await ft.get_events()

        got_header, got_data, got_events = asyncio.run(read())

    assert got_header.channel_names == names
    assert (got_header.fsample, got_header.data_type) == (512.0, DataType.FLOAT32)
    assert (got_header.nsamples, got_header.nevents) == (120, 2)
    assert got_data.dtype == np.float32
    np.testing.assert_array_equal(got_data, x)
    assert got_events == [Event("stim", "face", 5, 1, 2), Event("stim", 3, 17, 1, 2)]
