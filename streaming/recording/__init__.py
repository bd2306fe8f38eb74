"""Session recording to XDF, reading it back, replaying it over LSL and exporting it to BIDS."""

from neurocast.streaming.recording.read import XDFFormatError, XDFScan, load_xdf, scan_xdf
from neurocast.streaming.recording.recorder import RecorderState, RecorderStatus, SessionRecorder
from neurocast.streaming.recording.tap import RecordingSource
from neurocast.streaming.recording.xdf import ChannelMeta, XDFWriter

__all__ = [
    "ChannelMeta",
    "RecorderState",
    "RecorderStatus",
    "RecordingSource",
    "SessionRecorder",
    "XDFFormatError",
    "XDFScan",
    "XDFWriter",
    "load_xdf",
    "scan_xdf",
]
