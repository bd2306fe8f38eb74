"""Batch decoding jobs: a bounded queue of recordings to decode, their state and progress.

The decoding itself is :mod:`neurocast.streaming.engine.batch`; a job runs it in a worker
thread. Every job's status is written to the state directory when it changes, and a finished
job's results are written there in each format (see :mod:`neurocast.server.store`), so that
they survive a restart. A job that was queued or running when the server went down (stopped
or killed) is listed after the restart as ``failed``, with the reason ``server restarted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from neurocast.server.continuity import public_text
from neurocast.server.exceptions import Busy, InvalidInput, NotFound, NotReady
from neurocast.server.metrics import Metrics
from neurocast.server.registry import ModelRegistry
from neurocast.server.store import StateStore, write_atomic
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
from neurocast.wire.tables import to_bytes

logger = logging.getLogger(__name__)

#: The formats a finished job's results are written in.
RESULT_FORMATS = ("json", "npz", "parquet")
#: The reason given for a job that was queued or running when the server went down.
RESTARTED = "server restarted"


@dataclass(frozen=True)
class ClusterJob:
    """How jobs sent with ``engine="ray"`` reach the cluster.

    Parameters
    ----------
    models_dir : Path | None
        Folder of artifacts besides the packaged ones, as the cluster's nodes see it.
    """

    models_dir: Path | None = None


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
    store : StateStore | None
        Where its status and results are written (None: kept in memory only).
    cluster : ClusterJob | None
        Decode on a Ray cluster (an actor pool of Ray Data) instead of in this process.
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
        store: StateStore | None = None,
        cluster: ClusterJob | None = None,
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
        self.n_results = 0
        self.store = store
        self.saved: JobStatus | None = None  # the status read back after a restart
        self.forgotten = False  # deleted: nothing more is written for it
        self.abandoned = False  # the server is going down: the restart will say so
        self.windows = WindowCounter()
        self.created_at = time.time()
        self.finished_at: float | None = None
        self.elapsed_s: float | None = None
        self.cancel = threading.Event()
        self.cluster = cluster
        self._done: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    @classmethod
    def restored(cls, saved: JobStatus, store: StateStore) -> Job:
        """A job of an earlier run, from its saved status.

        A job that had not finished is marked ``failed`` (:data:`RESTARTED`); a done job whose
        result files are gone is marked ``failed`` too, saying so.
        """
        job = cls(Path(), saved.input, [], saved.models, saved.stride_s, 0, 1.0, False, None)
        job.id, job.store, job.created_at = saved.id, store, saved.created_at
        job.state, job.error, job.finished_at = saved.status, saved.error, saved.finished_at
        if job.state not in FINISHED_JOB_STATES:
            job.state, job.error, job.finished_at = "failed", RESTARTED, time.time()
        elif job.state == "done" and not all(job.results_file(f).is_file() for f in RESULT_FORMATS):
            job.state, job.error = (
                "failed",
                "its result files were removed from the state directory",
            )
        update: dict[str, object] = {
            "status": job.state,
            "error": job.error,
            "finished_at": job.finished_at,
        }
        if job.state != "done":
            update["results"] = {}
        job.saved = saved.model_copy(update=update)
        job.n_results = saved.n_results
        if job.saved != saved:
            job.persist()
        return job

    def results_file(self, fmt: str) -> Path:
        """Where the results are written in format ``fmt``."""
        assert self.store is not None
        return self.store.job_dir(self.id) / f"results.{fmt}"

    def persist(self) -> None:
        """Write the job's status to the state directory (never raises: logged)."""
        if self.store is None or self.forgotten or self.abandoned:
            return
        try:
            self.store.save_job(self.id, self.status().model_dump(mode="json"))
        except OSError as exc:
            logger.warning("Could not save job %s: %s", self.id, exc)

    def status(self) -> JobStatus:
        """The job's state, progress and, once done, where its results are."""
        if self.saved is not None:
            return self.saved
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
            n_results=self.n_results,
            models=self.model_ids,
            input=self.display_name,
            stride_s=self.stride_s,
            simulated=self.simulated,
            error=public_text(
                self.error and self.error.replace(str(self.path), self.display_name), None
            ),
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
        self.persist()
        t0 = time.perf_counter()
        try:

            def progress(result: Result) -> None:
                self.windows.add(result)
                if metrics is not None:
                    metrics.job_windows.labels(result.model).inc()

            if self.cluster is not None:
                from neurocast.server.cluster.batch import decode_file_on_cluster  # Ray only now

                results = decode_file_on_cluster(
                    self.path,
                    self.model_ids,
                    models_dir=self.cluster.models_dir,
                    stride_s=self.stride_s,
                    on_result=progress,
                    cancelled=self.cancel.is_set,
                )
            else:
                results = decode_recording(
                    load_recording(self.path),
                    self.models,
                    stride_s=self.stride_s,
                    on_result=progress,
                    cancelled=self.cancel.is_set,
                )
            self.elapsed_s = time.perf_counter() - t0
            if self.cancel.is_set():
                self._finish("cancelled")
            else:
                self._keep(results)
                self._finish("done")
        except Exception as exc:
            logger.warning("Job %s failed: %s", self.id, exc)
            self.error = (
                f"{type(exc).__name__}: {exc}" if not isinstance(exc, RecordingError) else str(exc)
            )
            self._finish("failed")
        finally:
            if metrics is not None:
                metrics.jobs.labels(self.state).inc()

    def _keep(self, results: list[Result]) -> None:
        """Hold the results: written in every format to the state directory, else in memory."""
        self.n_results = len(results)
        if self.store is None:
            self.results = results
            return
        for fmt in RESULT_FORMATS:
            if self.forgotten or self.abandoned:
                return
            write_atomic(self.results_file(fmt), to_bytes(fmt, results, self.simulated, self.id))

    def _finish(self, state: JobState) -> None:
        self.state = state
        self.finished_at = time.time()
        self.persist()
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
    """Runs batch jobs on a small thread pool, keeps the latest ones and bounds the queue.

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
    store : StateStore | None
        Where jobs and their results are written and, at startup, read back from.
    max_queued : int
        Jobs that may wait for a worker; one more is refused (:class:`Busy`).
    """

    def __init__(
        self,
        workers: int,
        max_jobs: int,
        registry: ModelRegistry,
        metrics: Metrics,
        store: StateStore | None = None,
        max_queued: int = 16,
        cluster: ClusterJob | None = None,
    ) -> None:
        self.cluster = cluster
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="neurocast-job")
        self.workers = workers
        self.max_jobs = max_jobs
        self.max_queued = max_queued
        self.registry = registry
        self.metrics = metrics
        self.store = store
        self._jobs: dict[str, Job] = {}
        if store is not None:
            self._restore(store)

    def _restore(self, store: StateStore) -> None:
        for record in store.load_jobs():
            try:
                saved = JobStatus.model_validate(record)
            except ValueError as exc:
                logger.warning("Ignoring the saved job %s: %s", record.get("id"), exc)
                continue
            self._jobs[saved.id] = Job.restored(saved, store)
        if self._jobs:
            logger.info("Read back %d job(s) from %s", len(self._jobs), store.jobs)

    def check_backlog(self) -> None:
        """Refuse a new job while the queue is full.

        Raises
        ------
        Busy
            ``job_queue_full``, with an estimate of when a place is likely to be free.
        """
        active = [j for j in self._jobs.values() if j.state in ("queued", "running")]
        waiting = len(active) - self.workers
        if waiting < self.max_queued:
            return
        recent = [j.elapsed_s for j in self._jobs.values() if j.elapsed_s is not None][-8:]
        per_job = sum(recent) / len(recent) if recent else 10.0
        retry = min(3600, max(1, math.ceil(per_job * (waiting + 1) / self.workers)))
        raise Busy(
            "job_queue_full",
            f"{len(active)} jobs are running or waiting and this server queues at most "
            f"{self.max_queued} beyond its {self.workers} worker(s); try again in about "
            f"{retry} s, or raise NEUROCAST_MAX_QUEUED_JOBS / NEUROCAST_JOB_WORKERS.",
            retry,
        )

    async def create(
        self,
        path: Path,
        display_name: str,
        model_ids: Sequence[str],
        stride_s: float,
        cleanup: Path | None = None,
        *,
        engine: str = "local",
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
        engine : {"local", "ray"}
            Decode in this process, or on the Ray cluster the server joined.

        Raises
        ------
        InvalidInput
            ``unknown_model``, or ``unreadable_file`` when MNE cannot read the header or a model
            does not fit the recording; ``ray_unavailable`` for ``engine="ray"`` on a server
            started without ``--ray``.
        Busy
            When the queue is full.
        """
        if engine == "ray" and self.cluster is None:
            _remove(cleanup)
            raise InvalidInput(
                "ray_unavailable",
                "This server was not started on a Ray cluster; start it with neurocast serve "
                "--ray, or send engine=local.",
            )
        try:
            self.check_backlog()
            # loading a model (first use) and reading a header block: not on the event loop
            models = await asyncio.to_thread(self.registry.window_models, model_ids)
            raw = await asyncio.to_thread(read_header, path)
            stream = stream_of(raw, path)
            check_models(stream, models)
            self.check_backlog()  # others may have queued while the header was read
        except RecordingError as exc:
            _remove(cleanup)
            reason = str(exc).replace(str(path), display_name)
            raise InvalidInput("unreadable_file", public_text(reason, None) or reason) from None
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
            store=self.store,
            cluster=self.cluster if engine == "ray" else None,
        )
        return self.submit(job)

    def submit(self, job: Job) -> Job:
        """Queue a job (from the event loop, so that clients can wait for it there)."""
        self._evict()
        self._jobs[job.id] = job
        job.watch()
        job.persist()
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

    def results(self, job_id: str, fmt: str) -> bytes | Path:
        """A finished job's results in format ``fmt``: their file, or their bytes.

        Raises
        ------
        NotFound, NotReady
            As :meth:`finished`.
        """
        job = self.finished(job_id)
        if job.store is not None:
            return job.results_file(fmt)
        return to_bytes(fmt, job.results, job.simulated, job.id)

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

    async def delete(self, job_id: str, wait_s: float = 10.0) -> JobStatus:
        """Cancel a job if it is still running, wait for it to stop, and forget it.

        Returns
        -------
        status : JobStatus
            Its last status: ``cancelled`` for a job that had not finished (a running job
            stops between two windows).
        """
        job = self._jobs.pop(job_id, None)
        if job is None:
            raise _unknown(job_id)
        job.forgotten = True
        job.cancel.set()
        if job.state == "running":
            await job.wait(wait_s)
        elif job.state == "queued":  # its worker will see the cancel before starting
            job.state = "cancelled"
        if self.store is not None:
            await asyncio.to_thread(self.store.forget_job, job.id)
        return job.status()

    def _evict(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in FINISHED_JOB_STATES]
        excess = len(self._jobs) + 1 - self.max_jobs
        for job in sorted(finished, key=lambda j: j.created_at)[: max(0, excess)]:
            del self._jobs[job.id]
            job.forgotten = True
            if self.store is not None:
                self.store.forget_job(job.id)

    def shutdown(self) -> None:
        """Cancel every job and wait for the workers to stop.

        The jobs stopped here keep the status they had on disk (queued or running), so that
        the next start lists them as failed because the server restarted.
        """
        for job in self._jobs.values():
            job.abandoned = True
            job.cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for job in self._jobs.values():
            _remove(job.cleanup)


def _unknown(job_id: str) -> NotFound:
    return NotFound.unknown("job", job_id, "/v1/jobs")


def _remove(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
