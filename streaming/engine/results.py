"""Decoding results as they leave the decode loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from neurocast.streaming.sources.base import Marker

# "signal" is the stream itself, decimated for display (sent only to clients that ask for it)
ResultKind = Literal["probabilities", "retrieval", "translation", "embedding", "signal"]


@dataclass
class Latency:
    """Wall-clock time spent in each stage for one window, in milliseconds.

    Attributes
    ----------
    acquisition_ms : float
        From the window's last sample being produced (source clock mapped to the local clock)
        to the start of preprocessing: transport plus time waiting for the decode clock.
        Negative when the source clock runs ahead of the local clock (never clamped; the
        result then carries the ``clock_ahead`` issue). Zero for batch decoding, where it has
        no meaning.
    preprocessing_ms : float
        Online preprocessing of the new samples and the per-window steps.
    inference_ms : float
        The model call.
    delivery_ms : float
        From the result being ready to it being handed to the client's connection; filled in
        by whoever delivers it (the WebSocket hub), zero until then.
    """

    acquisition_ms: float = 0.0
    preprocessing_ms: float = 0.0
    inference_ms: float = 0.0
    delivery_ms: float = 0.0


@dataclass
class Result:
    """One model's output for one window.

    Attributes
    ----------
    kind : str
        ``"probabilities"``, ``"retrieval"``, ``"translation"`` or ``"embedding"``.
    model : str
        Name of the model that produced it.
    window_end : int
        Exclusive index (samples since the stream started, at the stream's rate) of the
        window's end: the key that matches streaming and batch results.
    t_window_end : float
        Source-clock time of the window's last sample, in seconds.
    payload : dict
        Kind-specific output (class probabilities, top-k images, translated signal array, ...).
    valid : bool
        False when the window spans NaN/inf samples, a gap or a clock jump.
    issues : list of str
        Each kind of problem once: why the window is not valid (``non_finite``, ``gap``,
        ``clock_jump_backward`` ...), and timing notes that do not invalidate it
        (``clock_ahead``: the source clock runs ahead of the local one).
    skipped : int
        Windows skipped just before this one because decoding could not keep up (they were
        older than the latency budget).
    simulated : bool
        True when the stream comes from the simulator.
    latency : Latency
        Time spent in each stage.
    markers : list of Marker
        Events whose time falls inside the window.
    ready_time : float
        Local clock when the result was ready (used to measure delivery).
    clock_offset : float
        Add to ``t_window_end`` to get the local clock (LSL's ``time_correction``; 0 when the
        source stamps with the local clock).
    """

    kind: ResultKind
    model: str
    window_end: int
    t_window_end: float
    payload: dict[str, Any]
    valid: bool = True
    issues: list[str] = field(default_factory=list)
    skipped: int = 0
    simulated: bool = False
    latency: Latency = field(default_factory=Latency)
    markers: list[Marker] = field(default_factory=list)
    ready_time: float = 0.0
    clock_offset: float = 0.0
