"""The ``signal`` output (the incoming stream, band-passed and decimated for display) and the
stream's channel layout.

Once per decoded window, :class:`SignalTap` takes the samples the stream received since the
previous window from the ring buffer and runs them through the online preprocessing the
translators use (polyphase resampling to 150 Hz, causal 1-40 Hz Butterworth band-pass). Work
is done only while a client subscribes to ``signal``; the result goes through the hub like any
other and leaves as a binary frame
(:func:`~neurocast.wire.frames.encode_signal_frame`) whose ``kind`` is ``"signal"``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from neurocast.streaming.engine.pipeline import DecodeEngine
from neurocast.streaming.engine.results import Latency, Result
from neurocast.streaming.preprocessing.filters import OnlinePreprocessor, PreprocessSpec
from neurocast.streaming.sources.base import StreamInfo, local_clock
from neurocast.wire.schemas import ChannelModel, SessionChannels

SIGNAL_MODEL = "signal"
# the translators' own rate and band (TranslationWindow's defaults), so that translated and
# measured MEG go through the same resampling delay and filter and compare sample for sample
DISPLAY_HZ = 150.0
DISPLAY_BAND_HZ = (1.0, 40.0)


class SignalTap:
    """Decimated copies of the newest stream samples, one result per decoded window.

    Parameters
    ----------
    engine : callable
        Returns the session's decode engine (None until its source is open).
    wanted : callable
        True while some client subscribes to ``signal``.
    publish : callable
        Hands a result to the hub (thread-safe).
    """

    def __init__(
        self,
        engine: Callable[[], DecodeEngine | None],
        wanted: Callable[[], bool],
        publish: Callable[[Result], None],
    ) -> None:
        self._engine = engine
        self._wanted = wanted
        self._publish = publish
        self._next = -1  # next stream sample to take; -1 before the first window
        self._ch_types: list[str] = []
        self._pre: OnlinePreprocessor | None = None

    def __call__(self, result: Result) -> None:
        """Pass a decode result on, then add the signal of its window when one is wanted.

        Called on the decode thread, once per result; the signal follows the first result of
        each window.
        """
        self._publish(result)
        engine = self._engine()
        if engine is None or result.window_end <= self._next or not self._wanted():
            return
        signal = self._take(engine, result.window_end)
        if signal is None:
            return
        info = engine.stream
        self._publish(
            Result(
                kind="signal",
                model=SIGNAL_MODEL,
                window_end=result.window_end,
                t_window_end=result.t_window_end,
                payload={
                    "signal": signal,
                    "sfreq_hz": min(DISPLAY_HZ, info.sfreq),
                    "ch_names": info.ch_names,
                    "ch_types": self._ch_types,
                },
                valid=result.valid,
                issues=list(result.issues),
                simulated=result.simulated,
                latency=Latency(),
                ready_time=local_clock(),
                clock_offset=result.clock_offset,
            )
        )

    def _take(self, engine: DecodeEngine, end: int) -> NDArray[np.float32] | None:
        """Preprocessed samples since the previous call up to ``end``."""
        ring = engine.ring
        sfreq = engine.stream.sfreq
        oldest = max(0, ring.n_written - ring.capacity)
        resume = self._pre is not None and oldest <= self._next and end - self._next <= sfreq
        # a tap that paused (no subscriber for a while) starts over on the newest second
        start = self._next if resume else max(oldest, end - round(sfreq))
        if start >= end:
            return None
        if self._pre is None or not resume:
            spec = PreprocessSpec(
                resample_hz=min(DISPLAY_HZ, sfreq),
                l_freq_hz=DISPLAY_BAND_HZ[0],
                h_freq_hz=min(DISPLAY_BAND_HZ[1], 0.45 * min(DISPLAY_HZ, sfreq)),
            )
            self._pre = OnlinePreprocessor(spec, engine.stream)
            self._ch_types = engine.stream.info.get_channel_types()
        self._next = end
        return self._pre.push(ring.read(start, end).data)


def session_channels(session_id: str, stream: StreamInfo) -> SessionChannels:
    """A stream's channel names, types and positions, as the API returns them.

    Parameters
    ----------
    session_id : str
        The session decoding the stream.
    stream : StreamInfo
        Its metadata; positions are the first three entries of each channel's ``loc``
        (metres), None where they are all zero or not finite (position unknown).
    """
    info = stream.info
    channels = []
    for ch, kind in zip(info["chs"], info.get_channel_types(), strict=True):
        pos = np.asarray(ch["loc"][:3], dtype=float)
        known = bool(np.all(np.isfinite(pos)) and np.any(pos != 0))
        channels.append(
            ChannelModel(
                name=ch["ch_name"], type=kind, pos_m=[float(v) for v in pos] if known else None
            )
        )
    return SessionChannels(
        session_id=session_id,
        sfreq_hz=stream.sfreq,
        simulated=stream.simulated,
        channels=channels,
    )
