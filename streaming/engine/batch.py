"""Batch decoding of saved recordings with the engine live sessions use.

A recording is read with MNE and run through
:func:`~neurocast.streaming.engine.pipeline.decode_array`, so a file decoded in batch and the same
file streamed give the same output for the same window. The server's batch jobs and
``neurocast decode`` both decode through this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mne
import numpy as np
from numpy.typing import NDArray

from neurocast.streaming.engine.pipeline import WindowModel, decode_array
from neurocast.streaming.engine.results import Result
from neurocast.streaming.io import format_name, is_simulated
from neurocast.streaming.sources.base import Marker, SourceError, StreamInfo
from neurocast.streaming.sources.replay import open_recording, recording_events


class RecordingError(ValueError):
    """A file MNE cannot read, or whose channels do not fit the requested models."""


@dataclass(frozen=True)
class Recording:
    """A saved recording ready for decoding.

    Attributes
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Samples in SI units.
    timestamps : ndarray, shape (n_samples,)
        Time of each sample in seconds from the first sample.
    stream : StreamInfo
        Channel metadata, the file as ``source_id`` and whether it was simulated.
    markers : list of Marker
        The file's annotations and stim-channel events.
    """

    data: NDArray[np.float64]
    timestamps: NDArray[np.float64]
    stream: StreamInfo
    markers: list[Marker]


def read_header(path: Path) -> mne.io.BaseRaw:
    """Open a recording without loading its samples (the reader replay sessions use).

    Raises
    ------
    RecordingError
        If MNE cannot read it or it holds no samples; the message names the file, its format,
        what was expected and what was found.
    """
    try:
        return open_recording(path, verb="decode")
    except SourceError as exc:
        raise RecordingError(str(exc)) from None


def stream_of(raw: mne.io.BaseRaw, path: Path) -> StreamInfo:
    """The :class:`StreamInfo` of a recording, simulated when the simulator wrote it."""
    return StreamInfo(
        name=path.name,
        info=raw.info,
        simulated=is_simulated(raw.info),
        source_id=str(path),
    )


def load_recording(path: Path) -> Recording:
    """Read a whole recording for batch decoding, with the events a replay would emit.

    Raises
    ------
    RecordingError
        If MNE cannot read the header or the samples (a truncated file).
    """
    raw = read_header(path)
    try:
        data = raw.get_data()
        positions, values = recording_events(raw)
    except Exception as exc:
        raise RecordingError(
            f"Cannot decode {path.name!r}: reading its samples as {format_name(path)} failed "
            f"({type(exc).__name__}: {exc}); the file is probably truncated or corrupt."
        ) from None
    sfreq = raw.info["sfreq"]
    timestamps = np.arange(data.shape[1]) / sfreq
    markers = [Marker(int(i) / sfreq, v) for i, v in zip(positions, values, strict=True)]
    return Recording(data, timestamps, stream_of(raw, path), markers)


def check_models(stream: StreamInfo, models: Sequence[WindowModel]) -> None:
    """Raise :class:`RecordingError` when a model does not fit the recording's channels/rate."""
    for model in models:
        try:
            model.preprocessor(stream)
        except ValueError as exc:
            raise RecordingError(f"Model {model.name!r} cannot decode this file: {exc}") from None


def n_windows(n_samples: int, sfreq: float, stride_s: float) -> int:
    """Windows a recording of ``n_samples`` yields at ``stride_s`` (an estimate for progress)."""
    return max(0, int(n_samples // max(1, round(stride_s * sfreq))))


class WindowCounter:
    """Counts the windows behind a stream of results (one result per model per window).

    Results of one window share its ``window_end``; the models of a window are decoded one
    after the other, so a new ``window_end`` means a new window.
    """

    def __init__(self) -> None:
        self.last_end = 0
        self.n_windows = 0

    def add(self, result: Result) -> bool:
        """Count ``result``; True when it opens a new window."""
        if result.window_end == self.last_end:
            return False
        self.last_end = result.window_end
        self.n_windows += 1
        return True


def decode_recording(
    recording: Recording,
    models: Sequence[WindowModel],
    *,
    stride_s: float = 0.025,
    on_result: Callable[[Result], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> list[Result]:
    """Decode a whole recording with the live windows and preprocessing.

    Parameters
    ----------
    recording : Recording
        From :func:`load_recording`.
    models : sequence of WindowModel
        Decoders to run.
    stride_s : float
        Time between window ends in seconds.
    on_result : callable | None
        Called with every result as it is produced (progress).
    cancelled : callable
        Polled between windows; decoding stops early when it returns True.

    Returns
    -------
    results : list of Result
        One per model per window, in time order.
    """
    results: list[Result] = []
    for result in decode_array(
        recording.data,
        recording.timestamps,
        recording.stream,
        models,
        stride_s=stride_s,
        markers=recording.markers,
    ):
        if cancelled():
            break
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
