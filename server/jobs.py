"""Batch decoding of saved recordings, as jobs with progress.

A job reads a file with MNE and runs it through
:func:`~neurocast.streaming.engine.pipeline.decode_array`, the engine live sessions use, so a file
decoded in batch and the same file streamed give the same output for the same window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mne
import numpy as np
from numpy.typing import NDArray

from neurocast.server.errors import not_found
from neurocast.server.metrics import Metrics
from neurocast.server.schemas import FINISHED_JOB_STATES, JobState, JobStatus
from neurocast.streaming.engine.pipeline import WindowModel, decode_array
from neurocast.streaming.engine.results import Result
from neurocast.streaming.sources.base import Marker, SourceError, StreamInfo
from neurocast.streaming.sources.replay import SIMULATED_TAG, open_recording, recording_events

logger = logging.getLogger(__name__)


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
        If MNE cannot read it or it holds no samples; the message names the file and why.
    """
    try:
        return open_recording(path)
    except SourceError as exc:
        raise RecordingError(str(exc).replace(str(path), repr(path.name))) from None


def stream_of(raw: mne.io.BaseRaw, path: Path) -> StreamInfo:
    """The :class:`StreamInfo` of a recording, simulated when the simulator wrote it."""
    description = raw.info["description"] or ""
    return StreamInfo(
        name=path.name,
        info=raw.info,
        simulated=description.startswith(SIMULATED_TAG),
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
            f"Reading the samples of {path.name!r} failed ({type(exc).__name__}: {exc}); the "
            f"file is probably truncated or corrupt."
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


class Job:
    """One batch decoding job and its results.

    Parameters
    ----------
    path : Path
        The file to decode.
    display_name : str
        What the client called it (upload name or path under the data root).
    models : list of WindowModel
        Decoders to run.
    model_ids : list of str
        Their ids as the client gave them.
    stride_s : float
        Time between window ends in seconds.
    n_samples : int
        Samples in the file (for progress).
    sfreq : float
        Its sampling rate in Hz.
    simulated : bool
        Whether the recording is simulated.
    cleanup : Path | None
        A temporary directory removed when the job ends.
    """

    def __init__(
        self,
        path: Path,
        display_name: str,
        models: list[WindowModel],
        model_ids: list[str],
        stride_s: float,
        n_samples: int,
        sfreq: float,
        simulated: bool,
        cleanup: Path | None,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.path = path
        self.display_name = display_name
        self.models = models
        self.model_ids = model_ids
        self.stride_s = stride_s
        self.n_samples = max(n_samples, 1)
        self.n_windows_total = max(0, int(n_samples // max(1, round(stride_s * sfreq))))
        self.simulated = simulated
        self.cleanup = cleanup
        self.state: JobState = "queued"
        self.error: str | None = None
        self.results: list[Result] = []
        self.last_end = 0
        self.n_windows_done = 0
        self.created_at = time.time()
        self.finished_at: float | None = None
        self.elapsed_s: float | None = None
        self.cancel = threading.Event()
        self._done: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def status(self) -> JobStatus:
        """The job's state, progress and, once done, where its results are."""
        done = self.state == "done"
        progress = 1.0 if done else min(1.0, self.last_end / self.n_samples)
        rate = None
        if done and self.elapsed_s:
            rate = self.n_windows_done / self.elapsed_s
        return JobStatus(
            id=self.id,
            status=self.state,
            progress=progress,
            n_windows_done=self.n_windows_done,
            n_windows_total=self.n_windows_done if done else self.n_windows_total,
            n_results=len(self.results),
            models=self.model_ids,
            input=self.display_name,
            stride_s=self.stride_s,
            simulated=self.simulated,
            error=self.error,
            created_at=self.created_at,
            finished_at=self.finished_at,
            windows_per_s=rate,
            results=(
                {f: f"/v1/jobs/{self.id}/results?format={f}" for f in ("json", "npz", "parquet")}
                if done
                else {}
            ),
        )

    def run(self, metrics: Metrics | None = None) -> None:
        """Decode the file (in a worker thread); records failure instead of raising."""
        if self.cancel.is_set():
            self._finish("cancelled")
            return
        self.state = "running"
        t0 = time.perf_counter()
        try:
            recording = load_recording(self.path)

            def progress(result: Result) -> None:
                if result.window_end != self.last_end:
                    self.last_end = result.window_end
                    self.n_windows_done += 1
                if metrics is not None:
                    metrics.job_windows.labels(result.model).inc()

            self.results = decode_recording(
                recording,
                self.models,
                stride_s=self.stride_s,
                on_result=progress,
                cancelled=self.cancel.is_set,
            )
            self.elapsed_s = time.perf_counter() - t0
            self._finish("cancelled" if self.cancel.is_set() else "done")
        except Exception as exc:
            logger.warning("Job %s failed: %s", self.id, exc)
            self.error = (
                f"{type(exc).__name__}: {exc}" if not isinstance(exc, RecordingError) else str(exc)
            )
            self._finish("failed")
        finally:
            if metrics is not None:
                metrics.jobs.labels(self.state).inc()

    def _finish(self, state: JobState) -> None:
        self.state = state
        self.finished_at = time.time()
        if self.cleanup is not None:
            shutil.rmtree(self.cleanup, ignore_errors=True)
        if self._done is not None:
            loop, event = self._done
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                loop.call_soon_threadsafe(event.set)

    def watch(self) -> None:
        """Make :meth:`wait` usable from the running event loop (call before :meth:`run`)."""
        self._done = (asyncio.get_running_loop(), asyncio.Event())

    async def wait(self, timeout_s: float) -> None:
        """Return when the job has finished, or after ``timeout_s`` seconds."""
        if self._done is None or self.finished_at is not None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._done[1].wait(), timeout_s)


class JobManager:
    """Runs batch jobs on a small thread pool and keeps the latest ones.

    Parameters
    ----------
    workers : int
        Jobs decoded at once.
    max_jobs : int
        Jobs kept; beyond this the oldest finished jobs are forgotten.
    metrics : Metrics
        Where finished jobs and decoded windows are counted.
    """

    def __init__(self, workers: int, max_jobs: int, metrics: Metrics) -> None:
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="neurocast-job")
        self.max_jobs = max_jobs
        self.metrics = metrics
        self.jobs: dict[str, Job] = {}

    def submit(self, job: Job) -> Job:
        """Queue a job (from the event loop, so that clients can wait for it there)."""
        self._evict()
        self.jobs[job.id] = job
        job.watch()
        self.pool.submit(job.run, self.metrics)
        return job

    def get(self, job_id: str) -> Job:
        """The job with this id (404 :class:`ApiError` when unknown)."""
        try:
            return self.jobs[job_id]
        except KeyError:
            raise not_found("job", job_id, "/v1/jobs") from None

    def delete(self, job_id: str) -> Job:
        """Cancel a job if it is still running and forget it."""
        job = self.jobs.pop(job_id, None)
        if job is None:
            raise not_found("job", job_id, "/v1/jobs")
        job.cancel.set()
        return job

    def _evict(self) -> None:
        finished = [j for j in self.jobs.values() if j.state in FINISHED_JOB_STATES]
        excess = len(self.jobs) + 1 - self.max_jobs
        for job in sorted(finished, key=lambda j: j.created_at)[: max(0, excess)]:
            del self.jobs[job.id]

    def shutdown(self) -> None:
        """Cancel every job and wait for the workers to stop."""
        for job in self.jobs.values():
            job.cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for job in self.jobs.values():
            if job.cleanup is not None:
                shutil.rmtree(job.cleanup, ignore_errors=True)
