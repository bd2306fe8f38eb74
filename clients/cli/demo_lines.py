"""The lines ``neurocast demo --headless`` prints: one per model per printed window.

:class:`DemoLines` follows a session's stream (results, translated and measured signal frames,
events) and words each model's result with what it is measured against: the class
probabilities; the top-3 retrieved images with the image the simulator presented; the
correlation of the translated MEG with the simulated MEG of the same window. Every line says
SIMULATED when the stream is simulated.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from numpy.typing import NDArray

from neurocast.wire.frames import SignalFrame
from neurocast.wire.schemas import EventsMessage, ResultMessage

# how long after its onset an image counts as the one presented, in seconds (shown 0.5 s,
# with responses decodable up to about 0.6 s after onset)
PRESENTED_FOR_S = 0.7
# seconds of measured signal kept for comparison with translated windows
SIGNAL_KEEP_S = 2.0


class DemoLines:
    """Formats results for the headless demo; feed it every message with :meth:`line`.

    Parameters
    ----------
    decimate : int
        Print every n-th result per model.
    """

    def __init__(self, decimate: int = 4) -> None:
        self.decimate = max(1, decimate)
        self._seen: dict[str, int] = {}
        self._images: deque[tuple[float, str]] = deque(maxlen=64)
        self._signal: deque[SignalFrame] = deque()

    def line(self, message: object) -> str | None:
        """The line for this message, or None when it is not printed."""
        if isinstance(message, EventsMessage):
            for e in message.events:
                if e.value.startswith("image/"):
                    self._images.append((e.timestamp, e.value[len("image/") :]))
            return None
        if isinstance(message, SignalFrame) and message.meta.get("kind") == "signal":
            self._keep(message)
            return None
        if isinstance(message, SignalFrame | ResultMessage):
            model = str(
                message.meta.get("model", "?")
                if isinstance(message, SignalFrame)
                else message.model
            )
            n = self._seen.get(model, 0)
            self._seen[model] = n + 1
            if n % self.decimate:
                return None
            return self._result_line(model, message)
        return None

    def presented(self, t: float) -> str | None:
        """The image on screen (or whose response is still decodable) at source time ``t``."""
        shown = [(t0, i) for t0, i in self._images if 0.0 <= t - t0 <= PRESENTED_FOR_S]
        return shown[-1][1] if shown else None

    def _result_line(self, model: str, message: SignalFrame | ResultMessage) -> str:
        tag = "SIMULATED " if message.simulated else ""
        head = f"{tag}t={message.t_window_end:.3f}s ({_latency_text(message)}) {model}"
        if isinstance(message, SignalFrame):
            return f"{head} translation: {self._translation_text(message)}"
        payload = message.payload
        if message.kind == "probabilities":
            pairs = zip(payload.get("classes", []), payload.get("probabilities", []), strict=False)
            ranked = sorted(pairs, key=lambda cp: -float(cp[1]))
            return f"{head} classes: " + " | ".join(f"{c} {float(p):.2f}" for c, p in ranked)
        if message.kind == "retrieval":
            top = payload.get("topk", [])[:3]
            ids = ", ".join(f"{t['image_id']} {float(t['score']):.2f}" for t in top)
            shown = self.presented(message.t_window_end)
            return f"{head} retrieval: top-3 {ids}; presented {shown or 'none'}"
        return f"{head} {message.kind}"

    def _keep(self, frame: SignalFrame) -> None:
        self._signal.append(frame)
        while self._signal and frame.t_window_end - self._signal[0].t_window_end > SIGNAL_KEEP_S:
            self._signal.popleft()

    def _translation_text(self, frame: SignalFrame) -> str:
        names = list(frame.meta.get("ch_names", []))
        n_ch, n_s = frame.data.shape
        r = self.window_correlation(frame)
        corr = "n/a (no measured signal yet)" if r is None else f"r={r:.2f}"
        return (
            f"{n_ch} MEG ch x {n_s} samples; correlation with the simulated MEG of this window "
            f"{corr} (median over {len(names)} sensors)"
        )

    def window_correlation(self, frame: SignalFrame) -> float | None:
        """Median over sensors of the correlation of a translated window with the measured one.

        The measured (``signal``) samples are interpolated at the translated samples' times;
        both are band-passed 1-40 Hz.
        """
        measured = self._measured(list(frame.meta.get("ch_names", [])))
        if measured is None or frame.data.shape[1] < 3:
            return None
        times, values = measured
        n = frame.data.shape[1]
        t = frame.t_window_end - (n - 1 - np.arange(n)) / frame.sfreq_hz
        if t[0] < times[0] or t[-1] > times[-1]:
            return None
        ref = np.stack([np.interp(t, times, row) for row in values])
        return float(np.nanmedian(_row_correlation(frame.data, ref)))

    def _measured(self, names: list[str]) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
        if not self._signal or not names:
            return None
        index = {c: i for i, c in enumerate(self._signal[-1].meta.get("ch_names", []))}
        if not all(c in index for c in names):
            return None
        rows = [index[c] for c in names]
        times, values = [], []
        for f in self._signal:
            n = f.data.shape[1]
            if n:
                times.append(f.t_window_end - (n - 1 - np.arange(n)) / f.sfreq_hz)
                values.append(f.data[rows].astype(np.float64))
        if not times:
            return None
        return np.concatenate(times), np.concatenate(values, axis=1)


def _latency_text(message: SignalFrame | ResultMessage) -> str:
    """Acquisition + preprocessing + inference of the window, in milliseconds."""
    if isinstance(message, SignalFrame):
        lat = message.meta.get("latency", {})
        stages = [float(lat.get(k, 0.0)) for k in _STAGES]
    else:
        stages = [float(getattr(message.latency, k)) for k in _STAGES]
    return f"latency {sum(stages):.1f} ms"


_STAGES = ("acquisition_ms", "preprocessing_ms", "inference_ms")


def _row_correlation(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (NaN if flat)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / den, np.nan)
