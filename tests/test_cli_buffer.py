"""``neurocast buffer`` serves the FieldTrip protocol as a real process."""

from __future__ import annotations

import socket
import subprocess
import sys

import mne
import numpy as np
import pytest

from neurocast.streaming.sources.base import StreamInfo
from neurocast.streaming.sources.fieldtrip.server import FieldTripServer
from neurocast.streaming.sources.fieldtrip.writer import FieldTripWriter
from neurocast.streaming.sources.open import open_source
from neurocast.streaming.sources.specs import FieldTripSpec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(60)
def test_buffer_command_serves_writers_and_sources() -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "neurocast.clients.cli", "buffer", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert f":{port}" in proc.stdout.readline()  # printed once it listens
        info = mne.create_info(["C3", "Cz", "C4"], 250.0, "eeg")
        data = np.arange(3 * 50, dtype=np.float32).reshape(50, 3)
        source = open_source(FieldTripSpec(port=port))
        with FieldTripWriter("127.0.0.1", port) as writer:
            writer.put_header(StreamInfo("test", info))
            stream = source.open()
            writer.put_data(data)
            chunk = source.read(5.0)
        source.close()
        assert stream.ch_names == ["C3", "Cz", "C4"] and stream.sfreq == 250.0
        assert chunk is not None
        np.testing.assert_array_equal(chunk.data, data)
    finally:
        proc.terminate()
        proc.wait(10)


def test_buffer_command_reports_a_taken_port() -> None:
    with FieldTripServer("127.0.0.1", 0).serve_in_thread() as server:
        cmd = [sys.executable, "-m", "neurocast.clients.cli", "buffer", "--port", str(server.port)]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "cannot listen" in run.stdout
