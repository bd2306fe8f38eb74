"""Binary signal frames: exact round trip, documented layout, and clear errors on bad bytes."""

from __future__ import annotations

import contextlib
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neurocast.streaming.engine.results import Latency, Result
from neurocast.streaming.sources.base import Marker
from neurocast.wire.frames import (
    HEADER_SIZE,
    FrameError,
    decode_signal_frame,
    encode_signal_frame,
)


def _result(n_ch: int = 3, n_s: int = 5, simulated: bool = True, valid: bool = True) -> Result:
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((n_ch, n_s)).astype(np.float32) * 1e-12
    return Result(
        kind="translation",
        model="translator",
        window_end=12345,
        t_window_end=12.345,
        payload={
            "ch_names": [f"MEG{i:04d}" for i in range(n_ch)],
            "ch_types": ["mag"] * n_ch,
            "sfreq_hz": 250.0,
            "signal": signal,
        },
        valid=valid,
        issues=[] if valid else ["gap"],
        skipped=2,
        simulated=simulated,
        latency=Latency(1.0, 2.0, 3.0),
        markers=[Marker(12.3, "image/7")],
        ready_time=99.5,
    )


def test_round_trip_keeps_samples_and_metadata() -> None:
    result = _result()
    frame = decode_signal_frame(encode_signal_frame(result, "abc"))
    np.testing.assert_array_equal(frame.data, result.payload["signal"])
    assert frame.data.dtype == np.float32
    assert (frame.window_end, frame.t_window_end, frame.sfreq_hz) == (12345, 12.345, 250.0)
    assert frame.ready_time == 99.5
    assert frame.simulated and frame.valid
    assert frame.meta["model"] == "translator"
    assert frame.meta["session_id"] == "abc"
    assert frame.meta["ch_names"] == result.payload["ch_names"]
    assert frame.meta["latency"]["inference_ms"] == 3.0
    assert frame.meta["markers"] == [{"timestamp": 12.3, "value": "image/7"}]


def test_flags_follow_the_result() -> None:
    frame = decode_signal_frame(encode_signal_frame(_result(simulated=False, valid=False), "s"))
    assert not frame.simulated and not frame.valid
    assert frame.meta["issues"] == ["gap"]


def test_layout_is_the_documented_one() -> None:
    """A reader following the README table (not this module) gets the samples back."""
    result = _result(n_ch=4, n_s=7)
    buf = encode_signal_frame(result, "s")
    assert buf[:4] == b"NCF1" and buf[4] == 1 and buf[5] == 1
    n_ch, n_s = struct.unpack_from("<II", buf, 8)
    (window_end,) = struct.unpack_from("<q", buf, 16)
    meta_len, data_offset = struct.unpack_from("<II", buf, 48)
    assert (n_ch, n_s, window_end) == (4, 7, 12345)
    assert data_offset % 8 == 0
    json.loads(buf[HEADER_SIZE : HEADER_SIZE + meta_len])
    data = np.frombuffer(buf, "<f4", n_ch * n_s, data_offset).reshape(n_ch, n_s)
    np.testing.assert_array_equal(data, result.payload["signal"])


def test_truncated_frame_is_refused_with_sizes() -> None:
    buf = encode_signal_frame(_result(), "s")
    with pytest.raises(FrameError, match="Truncated"):
        decode_signal_frame(buf[:-1])
    with pytest.raises(FrameError, match="header bytes"):
        decode_signal_frame(buf[:10])


def test_wrong_magic_and_version_are_refused() -> None:
    buf = bytearray(encode_signal_frame(_result(), "s"))
    with pytest.raises(FrameError, match="magic"):
        decode_signal_frame(b"XXXX" + bytes(buf[4:]))
    buf[4] = 9
    with pytest.raises(FrameError, match="version"):
        decode_signal_frame(bytes(buf))


def test_signal_must_be_two_dimensional() -> None:
    result = _result()
    result.payload["signal"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="channels × samples"):
        encode_signal_frame(result, "s")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    try:
        frame = decode_signal_frame(data)
    except FrameError:
        return
    assert frame.data.ndim == 2


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 200), st.binary(min_size=1, max_size=8))
def test_corrupted_frames_raise_frame_error_only(position: int, junk: bytes) -> None:
    buf = bytearray(encode_signal_frame(_result(), "s"))
    position = min(position, len(buf) - 1)
    buf[position : position + len(junk)] = junk
    with contextlib.suppress(FrameError):  # any other exception fails the test
        decode_signal_frame(bytes(buf))
