"""The ``signal`` WebSocket output and the channel layout of a session's stream, on the real
server with a real WebSocket client."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from test_server_support import AUTH, SIM_SPEC, serve

from neurocast.server.signal_tap import DISPLAY_HZ
from neurocast.streaming.sources.simulator.simulator import Simulator
from neurocast.wire.frames import SignalFrame
from neurocast.wire.schemas import ALL_OUTPUTS, SessionChannels, Subscribe

pytest_plugins = ["test_server_support"]
pytestmark = pytest.mark.timeout(120)


def test_signal_is_opt_in() -> None:
    assert "signal" not in ALL_OUTPUTS
    assert "signal" not in Subscribe().outputs
    assert Subscribe(outputs=["signal"]).outputs == ["signal"]


def test_signal_frames_carry_the_stream_continuously(registry, model_ids) -> None:
    with serve(registry) as (server, client):
        session = client.create_session(SIM_SPEC, [model_ids["classifier"]], name="signal")
        assert session.status == "running", session.error
        frames: list[SignalFrame] = []
        # decimation thins results, never the signal (each frame holds only new samples)
        with client.stream(session.id, ["signal"], decimate=4) as stream:
            while len(frames) < 40:
                message = stream.receive(timeout=20)
                if isinstance(message, SignalFrame):
                    frames.append(message)
                else:  # the subscription's confirmation only: no results were asked for
                    assert message.type == "subscribed" and message.outputs == ["signal"]
        r = httpx.get(f"{server.url}/v1/sessions/{session.id}/channels", headers=AUTH)
        missing = httpx.get(f"{server.url}/v1/sessions/nope/channels", headers=AUTH)
    assert all(f.meta["kind"] == "signal" and f.simulated for f in frames)
    names = frames[0].meta["ch_names"]
    assert len(names) == 64 and frames[0].meta["ch_types"] == ["eeg"] * 64
    assert all(f.sfreq_hz == DISPLAY_HZ for f in frames)
    # one frame per window (25 ms at 150 Hz: 3 or 4 samples), none lost: the sample counts
    # add up to the time the windows span
    counts = np.array([f.data.shape[1] for f in frames[1:]])
    assert set(counts) <= {3, 4}
    span = frames[-1].t_window_end - frames[0].t_window_end
    assert counts.sum() == pytest.approx(span * DISPLAY_HZ, abs=2)
    assert np.all(np.diff([f.window_end for f in frames]) > 0)
    data = np.concatenate([f.data for f in frames], axis=1)
    # band-passed EEG in volts: finite, zero-mean-ish, microvolt scale
    assert np.isfinite(data).all() and 1e-7 < np.std(data) < 1e-3
    assert r.status_code == 200 and missing.status_code == 404
    layout = SessionChannels.model_validate(r.json())
    assert layout.session_id == session.id and layout.simulated
    assert [c.name for c in layout.channels] == names
    positions = np.array([c.pos_m for c in layout.channels if c.pos_m is not None])
    # the electrode positions of the simulated montage, in metres
    expected = np.array([ch["loc"][:3] for ch in Simulator(SIM_SPEC).info["chs"]])
    np.testing.assert_allclose(positions, expected)
    assert 0.05 < np.ptp(positions[:, 0]) < 0.25
