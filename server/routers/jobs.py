"""``/v1/jobs``: batch decoding jobs, their progress and their results."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import FileResponse

from neurocast.server.deps import StateDep
from neurocast.server.routers.common import error
from neurocast.wire.schemas import JobList, JobResults, JobStatus, ResultFormat
from neurocast.wire.tables import MEDIA_TYPES

router = APIRouter(prefix="/jobs", tags=["batch decoding"])

_NOT_FOUND = error(404, "No job with this id.")


@router.get("", response_model=JobList, summary="List jobs")
def list_jobs(state: StateDep) -> JobList:
    """The jobs kept on this server, newest last."""
    return JobList(jobs=state.jobs.statuses())


@router.get("/{job_id}", response_model=JobStatus, summary="A job's progress", responses=_NOT_FOUND)
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
    "/{job_id}/results",
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
    body = await asyncio.to_thread(state.jobs.results, job_id, format)
    headers = {}
    if format != "json":
        headers["Content-Disposition"] = f'attachment; filename="{job_id}.{format}"'
    if isinstance(body, bytes):
        return Response(body, media_type=MEDIA_TYPES[format], headers=headers)
    return FileResponse(body, media_type=MEDIA_TYPES[format], headers=headers)


@router.delete(
    "/{job_id}",
    response_model=JobStatus,
    summary="Cancel and forget a job",
    responses=_NOT_FOUND,
)
async def delete_job(job_id: str, state: StateDep) -> JobStatus:
    """Stop a running job (between windows) and free its results.

    Answers once a running job has stopped (``cancelled``), or after 10 s.
    """
    return await state.jobs.delete(job_id)
