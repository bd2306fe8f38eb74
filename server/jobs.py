"""Batch decoding jobs: a queue of recordings to decode, their state and their progress.

The decoding itself is :mod:`neurocast.streaming.engine.batch`; a job runs it in a worker
thread and keeps the results until they are fetched or the job is forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from neurocast.server.exceptions import InvalidInput, NotFound, NotReady
from neurocast.server.metrics import Metrics
from neurocast.server.registry import ModelRegistry
from neurocast.streaming.engine.batch import (
    RecordingError,
    WindowCounter,
    check_models,
    decode_recording,
    load_recording,
    n_windows,
    read_header,
    stream_of,
)
from neurocast.streaming.engine.pipeline import WindowModel
from neurocast.streaming.engine.results import Result
from neurocast.wire.schemas import FINISHED_JOB_STATES, JobState, JobStatus

logger = logging.getLogger(__name__)


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
        self.n_windows_total = n_windows(n_samples, sfreq, stride_s)
        self.simulated = simulated
        self.cleanup = cleanup
        self.state: JobState = "queued"
        self.error: str | None = None
        self.results: list[Result] = []
        self.windows = WindowCounter()
        self.created_at = time.time()
        self.finished_at: float | None = None
        self.elapsed_s: float | None = None
        self.cancel = threading.Event()
        self._done: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def status(self) -> JobStatus:
        """The job's state, progress and, once done, where its results are."""
        done = self.state == "done"
        progress = 1.0 if done else min(1.0, self.windows.last_end / self.n_samples)
        n_done = self.windows.n_windows
        rate = n_done / self.elapsed_s if done and self.elapsed_s else None
        return JobStatus(
            id=self.id,
            status=self.state,
            progress=progress,
            n_windows_done=n_done,
            n_windows_total=n_done if done else self.n_windows_total,
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
                self.windows.add(result)
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
        _remove(self.cleanup)
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
    registry : ModelRegistry
        Where the model ids of a job are looked up.
    metrics : Metrics
        Where finished jobs and decoded windows are counted.
    """

    def __init__(
        self, workers: int, max_jobs: int, registry: ModelRegistry, metrics: Metrics
    ) -> None:
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="neurocast-job")
        self.max_jobs = max_jobs
        self.registry = registry
        self.metrics = metrics
        self._jobs: dict[str, Job] = {}

    async def create(
        self,
        path: Path,
        display_name: str,
        model_ids: Sequence[str],
        stride_s: float,
        cleanup: Path | None = None,
    ) -> Job:
        """Check a recording against its models and queue the job that decodes it.

        Parameters
        ----------
        path : Path
            The recording (inside the data root, or an upload).
        display_name : str
            What the client called it.
        model_ids : sequence of str
            Models to run.
        stride_s : float
            Time between window ends in seconds.
        cleanup : Path | None
            A temporary directory removed when the job ends, or now if it is refused.

        Raises
        ------
        InvalidInput
            ``unknown_model``, or ``unreadable_file`` when MNE cannot read the header or a model
            does not fit the recording.
        """
        try:
            # loading a model (first use) and reading a header block: not on the event loop
            models = await asyncio.to_thread(self.registry.window_models, model_ids)
            raw = await asyncio.to_thread(read_header, path)
            stream = stream_of(raw, path)
            check_models(stream, models)
        except RecordingError as exc:
            _remove(cleanup)
            raise InvalidInput("unreadable_file", str(exc)) from None
        except BaseException:
            _remove(cleanup)
            raise
        job = Job(
            path,
            display_name,
            models,
            list(model_ids),
            stride_s,
            n_samples=raw.n_times,
            sfreq=raw.info["sfreq"],
            simulated=stream.simulated,
            cleanup=cleanup,
        )
        return self.submit(job)

    def submit(self, job: Job) -> Job:
        """Queue a job (from the event loop, so that clients can wait for it there)."""
        self._evict()
        self._jobs[job.id] = job
        job.watch()
        self.pool.submit(job.run, self.metrics)
        return job

    def statuses(self) -> list[JobStatus]:
        """Status of every job kept, oldest first."""
        return [j.status() for j in list(self._jobs.values())]

    def get(self, job_id: str) -> Job:
        """The job with this id.

        Raises
        ------
        NotFound
            When there is none.
        """
        job = self._jobs.get(job_id)
        if job is None:
            raise _unknown(job_id)
        return job

    def finished(self, job_id: str) -> Job:
        """A job whose results can be fetched.

        Raises
        ------
        NotFound
            When there is no such job.
        NotReady
            ``job_not_done`` when it is still running, failed or was cancelled.
        """
        job = self.get(job_id)
        if job.state != "done":
            reason = f" ({job.error})" if job.error else ""
            raise NotReady(
                "job_not_done",
                f"Job {job_id} is {job.state}{reason}; results exist once its status is done.",
            )
        return job

    def delete(self, job_id: str) -> Job:
        """Cancel a job if it is still running and forget it."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            raise _unknown(job_id)
        job.cancel.set()
        return job

    def _evict(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in FINISHED_JOB_STATES]
        excess = len(self._jobs) + 1 - self.max_jobs
        for job in sorted(finished, key=lambda j: j.created_at)[: max(0, excess)]:
            del self._jobs[job.id]

    def shutdown(self) -> None:
        """Cancel every job and wait for the workers to stop."""
        for job in self._jobs.values():
            job.cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for job in self._jobs.values():
            _remove(job.cleanup)


def _unknown(job_id: str) -> NotFound:
    return NotFound.unknown("job", job_id, "/v1/jobs")


def _remove(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
