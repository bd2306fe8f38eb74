"""``POST /v1/decode`` and ``/v1/jobs``: batch decoding of saved recordings."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import File, Form, Query, Response, UploadFile, status

from neurocast.server.deps import StateDep
from neurocast.server.errors import ApiError, resolve_under_root
from neurocast.server.jobs import Job, RecordingError, check_models, read_header, stream_of
from neurocast.server.routers.common import error, protected_router
from neurocast.server.schemas import JobList, JobResults, JobStatus, ResultFormat
from neurocast.server.tables import to_json, to_npz, to_parquet

router = protected_router("batch decoding")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_COPY_CHUNK = 1 << 20
_NOT_FOUND = error(404, "No job with this id.")
MEDIA_TYPES = {
    "json": "application/json",
    "npz": "application/x-npz",
    "parquet": "application/vnd.apache.parquet",
}


def _safe_name(filename: str | None) -> str:
    name = _UNSAFE.sub("_", Path(filename or "").name).lstrip(".")
    if not name or "." not in name:
        raise ApiError(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "filename_needed",
            "The upload needs a file name with its usual extension (e.g. recording_raw.fif, "
            "subject.edf): MNE chooses the reader from it.",
        )
    return name


async def _save_upload(upload: UploadFile) -> tuple[Path, Path]:
    name = _safe_name(upload.filename)
    tmpdir = Path(tempfile.mkdtemp(prefix="neurocast-upload-"))
    target = tmpdir / name
    try:
        with target.open("wb") as out:
            while chunk := await upload.read(_COPY_CHUNK):
                out.write(chunk)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    if target.stat().st_size == 0:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise ApiError(status.HTTP_422_UNPROCESSABLE_CONTENT, "empty_file", "The upload is empty.")
    return target, tmpdir


@router.post(
    "/v1/decode",
    response_model=JobStatus,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Batch-decode a recording",
    responses={
        **error(400, "Neither or both of file and path."),
        **error(403, "A path outside the data root."),
        **error(404, "A path that does not exist."),
        **error(413, "The upload exceeds the size limit."),
        422: {"description": "Unknown model, unreadable file, or a model that does not fit it."},
    },
)
async def decode(
    state: StateDep,
    response: Response,
    models: Annotated[list[str], Form(min_length=1, description="Model ids to run.")],
    stride_s: Annotated[
        float, Form(ge=0.005, le=10.0, description="Time between window ends, seconds.")
    ] = 0.025,
    path: Annotated[
        str | None, Form(description="A file under the server's data root (instead of file).")
    ] = None,
    file: Annotated[
        UploadFile | None, File(description="The recording, with its usual extension.")
    ] = None,
) -> JobStatus:
    """Start decoding an uploaded file or a file under the data root, as a job.

    Any format ``mne.io.read_raw`` reads. The windows, preprocessing and outputs are those of a
    live session on the same recording. Poll ``GET /v1/jobs/{id}`` for progress, then fetch the
    results as JSON, NPZ or Parquet.
    """
    if (file is None) == (path is None or path == ""):
        raise ApiError(
            status.HTTP_400_BAD_REQUEST,
            "one_input_needed",
            "Send exactly one of 'file' (an upload) or 'path' (a file under the data root).",
        )
    window_models = await asyncio.to_thread(state.registry.window_models, models)
    cleanup: Path | None = None
    if file is not None:
        target, cleanup = await _save_upload(file)
        display = target.name
    else:
        assert path is not None
        target = resolve_under_root(state.settings.data_root, path)
        display = path
    try:
        raw = await asyncio.to_thread(read_header, target)
        stream = stream_of(raw, target)
        check_models(stream, window_models)
    except RecordingError as exc:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        raise ApiError(status.HTTP_422_UNPROCESSABLE_CONTENT, "unreadable_file", str(exc)) from None
    job = Job(
        target,
        display,
        window_models,
        list(models),
        stride_s,
        n_samples=raw.n_times,
        sfreq=raw.info["sfreq"],
        simulated=stream.simulated,
        cleanup=cleanup,
    )
    state.jobs.submit(job)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job.status()


@router.get("/v1/jobs", response_model=JobList, summary="List jobs")
def list_jobs(state: StateDep) -> JobList:
    """The jobs kept on this server, newest last."""
    return JobList(jobs=[j.status() for j in list(state.jobs.jobs.values())])


@router.get(
    "/v1/jobs/{job_id}", response_model=JobStatus, summary="A job's progress", responses=_NOT_FOUND
)
async def get_job(
    job_id: str,
    state: StateDep,
    wait_s: Annotated[
        float,
        Query(
            ge=0,
            le=60,
            description="Long poll: answer as soon as the job has finished, or after this "
            "many seconds.",
        ),
    ] = 0.0,
) -> JobStatus:
    """State, progress and, once done, the URLs of the results."""
    job = state.jobs.get(job_id)
    if wait_s > 0:
        await job.wait(wait_s)
    return job.status()


@router.get(
    "/v1/jobs/{job_id}/results",
    response_model=JobResults,
    summary="A finished job's results",
    responses={
        200: {
            "content": {
                "application/x-npz": {"schema": {"type": "string", "format": "binary"}},
                "application/vnd.apache.parquet": {
                    "schema": {"type": "string", "format": "binary"}
                },
            },
            "description": "JSON (default), NPZ or Parquet, as `format` asks.",
        },
        **error(409, "The job has not finished."),
        **_NOT_FOUND,
    },
)
async def job_results(
    job_id: str,
    state: StateDep,
    format: Annotated[ResultFormat, Query(description="json, npz or parquet")] = "json",
) -> Response:
    """The decoded windows: one record per model and window (see the README for the layout)."""
    job = state.jobs.get(job_id)
    if job.state != "done":
        raise ApiError(
            status.HTTP_409_CONFLICT,
            "job_not_done",
            f"Job {job_id} is {job.state}"
            + (f" ({job.error})" if job.error else "")
            + "; results exist once its status is done.",
        )
    if format == "json":
        body: bytes | str = await asyncio.to_thread(to_json, job.results, job.id, job.simulated)
    elif format == "npz":
        body = await asyncio.to_thread(to_npz, job.results, job.simulated)
    else:
        body = await asyncio.to_thread(to_parquet, job.results, job.simulated)
    headers = {}
    if format != "json":
        headers["Content-Disposition"] = f'attachment; filename="{job.id}.{format}"'
    return Response(body, media_type=MEDIA_TYPES[format], headers=headers)


@router.delete(
    "/v1/jobs/{job_id}",
    response_model=JobStatus,
    summary="Cancel and forget a job",
    responses=_NOT_FOUND,
)
def delete_job(job_id: str, state: StateDep) -> JobStatus:
    """Stop a running job (between windows) and free its results."""
    job = state.jobs.delete(job_id)
    return job.status()
