"""Batch decoding of many recordings with Ray Data, one Parquet file per recording.

Each row of the dataset is one recording's path; an actor pool (``map_batches`` with a class)
holds the models' ONNX Runtime sessions, so they load once per worker, not once per file. A
worker decodes a whole recording with :func:`~neurocast.streaming.engine.batch.decode_recording`
(the engine live sessions use, so the output equals single-process batch decoding) and writes
``<out_dir>/<stem>.parquet`` through a temporary file and an atomic rename.

A lost worker does not lose or duplicate a recording: Ray Data restarts a pool's dead actor
and retries the task it held (its defaults for actor pools: ``max_restarts=-1``,
``max_task_retries=-1``, kept here); a recording's file exists only once its rename is done and a
retry writes the same file again, and the outcome of a lost attempt is never emitted, so each
recording ends up as exactly one file and one outcome row.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray

from neurocast.catalog import load_models
from neurocast.server.cluster.plain import result_from_plain, result_to_plain
from neurocast.streaming.engine.batch import (
    RecordingError,
    WindowCounter,
    check_models,
    decode_recording,
    load_recording,
)
from neurocast.streaming.engine.results import Result
from neurocast.wire.tables import to_parquet


@dataclass(frozen=True)
class RecordingOutcome:
    """What decoding one recording gave.

    Attributes
    ----------
    path : str
        The recording.
    out : str | None
        Its Parquet file (None when it failed).
    n_results : int
        Results written (one per model per window).
    n_windows : int
        Windows decoded.
    elapsed_s : float
        Time spent reading and decoding it, in seconds.
    worker_pid : int
        Process that decoded it.
    error : str | None
        Why it could not be decoded (unreadable file, models that do not fit).
    """

    path: str
    out: str | None
    n_results: int
    n_windows: int
    elapsed_s: float
    worker_pid: int
    error: str | None


def output_path(recording: Path | str, out_dir: Path) -> Path:
    """Where a recording's results go: ``<out_dir>/<file name without its suffixes>.parquet``."""
    name = Path(recording).name
    stem = name.split(".", 1)[0] or name
    return out_dir / f"{stem}.parquet"


class RecordingDecoder:
    """Decodes recordings in a Ray Data worker (the actor pool's callable class).

    Parameters
    ----------
    model_ids : list of str
        Models to run.
    out_dir : str
        Where Parquet files go.
    models_dir : str | None
        Folder of artifacts besides the packaged ones.
    stride_s : float
        Time between window ends in seconds.
    threads : int | None
        Intra-op threads of the models (None: the runtime's default).
    """

    def __init__(
        self,
        model_ids: list[str],
        out_dir: str,
        models_dir: str | None = None,
        stride_s: float = 0.025,
        threads: int | None = None,
    ) -> None:
        if threads is not None:
            os.environ["NEUROCAST_THREADS"] = str(threads)
        self.models = load_models(model_ids, Path(models_dir) if models_dir else None)
        self.out_dir = Path(out_dir)
        self.stride_s = stride_s

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        """Decode every recording of ``batch["path"]``; one outcome row per recording."""
        rows: dict[str, list[Any]] = {f: [] for f in RecordingOutcome.__dataclass_fields__}
        for path in batch["path"]:
            outcome = self.decode(str(path))
            for f in rows:
                rows[f].append(getattr(outcome, f))
        return rows

    def decode(self, path: str) -> RecordingOutcome:
        """Decode one recording and write its Parquet file."""
        t0 = time.perf_counter()
        try:
            recording = load_recording(Path(path))
            check_models(recording.stream, self.models)
        except RecordingError as exc:
            return RecordingOutcome(path, None, 0, 0, 0.0, os.getpid(), str(exc))
        results = decode_recording(recording, self.models, stride_s=self.stride_s)
        counter = WindowCounter()
        for r in results:
            counter.add(r)
        out = output_path(path, self.out_dir)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_bytes(to_parquet(results, recording.stream.simulated))
        os.replace(tmp, out)  # the file appears whole or not at all
        return RecordingOutcome(
            path,
            str(out),
            len(results),
            counter.n_windows,
            time.perf_counter() - t0,
            os.getpid(),
            None,
        )


def decode_recordings(
    paths: Sequence[Path | str],
    model_ids: Sequence[str],
    out_dir: Path,
    *,
    models_dir: Path | None = None,
    stride_s: float = 0.025,
    workers: int = 2,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    threads: int | None = None,
    on_done: Callable[[RecordingOutcome, int, int], None] | None = None,
) -> list[RecordingOutcome]:
    """Decode many recordings on the connected Ray cluster (``ray.init`` first).

    Parameters
    ----------
    paths : sequence of path-like
        Recordings, readable by the workers (shared storage on a multi-node cluster).
    model_ids : sequence of str
        Models to run.
    out_dir : Path
        Folder for the Parquet files (created; shared storage on a multi-node cluster).
    models_dir : Path | None
        Folder of artifacts besides the packaged ones.
    stride_s : float
        Time between window ends in seconds.
    workers : int
        Actors in the pool, each with its own ONNX sessions.
    num_cpus, num_gpus : float
        Resources each actor reserves (a GPU fraction shares a GPU between actors).
    threads : int | None
        Intra-op threads of each actor's models.
    on_done : callable | None
        Progress: called with each outcome, the recordings done so far and the total, as
        recordings finish.

    Returns
    -------
    outcomes : list of RecordingOutcome
        One per recording, in the order of ``paths``.

    Raises
    ------
    ValueError
        If two recordings would write the same output file.
    """
    resolved = [str(Path(p).resolve()) for p in paths]
    outs = [output_path(p, out_dir) for p in resolved]
    if len(set(outs)) != len(outs):
        raise ValueError("Two recordings have the same file name; their results would collide.")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resolved:
        return []
    ds = ray.data.from_items([{"path": p} for p in resolved], override_num_blocks=len(resolved))
    decoded = ds.map_batches(
        RecordingDecoder,
        fn_constructor_kwargs={
            "model_ids": list(model_ids),
            "out_dir": str(out_dir),
            "models_dir": str(models_dir) if models_dir else None,
            "stride_s": stride_s,
            "threads": threads,
        },
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )
    by_path: dict[str, RecordingOutcome] = {}
    for row in decoded.iter_rows():
        fields = RecordingOutcome.__dataclass_fields__
        outcome = RecordingOutcome(**{f: _item(row[f]) for f in fields})
        by_path[outcome.path] = outcome
        if on_done is not None:
            on_done(outcome, len(by_path), len(resolved))
    return [by_path[p] for p in resolved]


def _item(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _decode_file_task(
    path: str, model_ids: list[str], models_dir: str | None, stride_s: float
) -> dict[str, Any]:
    """Body of the Ray task :func:`decode_file_on_cluster` submits."""
    try:
        recording = load_recording(Path(path))
        models = load_models(model_ids, Path(models_dir) if models_dir else None)
        check_models(recording.stream, models)
    except RecordingError as exc:
        return {"error": str(exc), "results": []}
    results = decode_recording(recording, models, stride_s=stride_s)
    return {"error": None, "results": [result_to_plain(r) for r in results]}


def decode_file_on_cluster(
    path: Path,
    model_ids: Sequence[str],
    *,
    models_dir: Path | None = None,
    stride_s: float = 0.025,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    max_retries: int = 3,
    on_result: Callable[[Result], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
    poll_s: float = 0.2,
) -> list[Result]:
    """Decode one recording in a Ray task: the drop-in of
    :func:`~neurocast.streaming.engine.batch.decode_recording` for the service's batch jobs.

    Parameters
    ----------
    path : Path
        The recording, readable where the task runs.
    model_ids : sequence of str
        Models to run (loaded in the task).
    models_dir : Path | None
        Folder of artifacts besides the packaged ones.
    stride_s : float
        Time between window ends in seconds.
    num_cpus, num_gpus : float
        Resources the task reserves.
    max_retries : int
        Times the task is run again when its worker dies.
    on_result : callable | None
        Called with every result once the task has finished (progress arrives all at once).
    cancelled : callable
        Polled every ``poll_s`` seconds; the task is cancelled when it returns True.
    poll_s : float
        Polling period in seconds.

    Returns
    -------
    results : list of Result
        One per model per window, in time order (empty when cancelled).

    Raises
    ------
    RecordingError
        When the file cannot be read or a model does not fit it.
    """
    task = ray.remote(_decode_file_task).options(
        num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries
    )
    ref = task.remote(str(path), list(model_ids), str(models_dir) if models_dir else None, stride_s)
    while not ray.wait([ref], timeout=poll_s)[0]:
        if cancelled():
            ray.cancel(ref, force=True)
            return []
    reply: dict[str, Any] = ray.get(ref)
    if reply["error"] is not None:
        raise RecordingError(reply["error"])
    results = [result_from_plain(r) for r in reply["results"]]
    if on_result is not None:
        for r in results:
            on_result(r)
    return results
