"""The decode engine: ring buffer, windows, the per-window pipeline, the loop and its results."""

from neurocast.streaming.engine.loop import DecodeLoop, LoopStats
from neurocast.streaming.engine.pipeline import DecodeEngine, WindowModel, decode_array
from neurocast.streaming.engine.results import Latency, Result, ResultKind
from neurocast.streaming.engine.ring import NotEnoughDataError, RingBuffer, TimestampIssue, Window
from neurocast.streaming.engine.windows import DecodeClock, WindowSamples, WindowSpec

__all__ = [
    "DecodeClock",
    "DecodeEngine",
    "DecodeLoop",
    "Latency",
    "LoopStats",
    "NotEnoughDataError",
    "Result",
    "ResultKind",
    "RingBuffer",
    "TimestampIssue",
    "Window",
    "WindowModel",
    "WindowSamples",
    "WindowSpec",
    "decode_array",
]
