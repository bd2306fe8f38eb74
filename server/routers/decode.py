"""``POST /v1/decode``: start batch-decoding a recording (the job is then under ``/v1/jobs``)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile, status

from neurocast.server.data_root import resolve_under_root
from neurocast.server.deps import StateDep
from neurocast.server.errors import ApiError
from neurocast.server.routers.common import error
from neurocast.streaming.io import safe_name
from neurocast.wire.schemas import JobStatus

router = APIRouter(tags=["batch decoding"])

_COPY_CHUNK = 1 << 20


def _safe_name(filename: str | None) -> str:
    name = safe_name(Path(filename or "").name).lstrip(".")
    if not name or "." not in name:
        raise ApiError(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "filename_needed",
            "The upload needs a file name with its usual extension (e.g. recording_raw.fif, "
            "subject.edf): MNE chooses the reader from it.",
        )
    return name


async def _save_upload(upload: UploadFile) -> tuple[Path, Path]:
    """The upload copied into a new temporary folder: the file and the folder."""
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
    "/decode",
    response_model=JobStatus,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Batch-decode a recording",
    responses={
        **error(400, "Neither or both of file and path."),
        **error(403, "A path outside the data root."),
        **error(404, "A path that does not exist."),
        **error(413, "The upload exceeds the size limit."),
        422: {"description": "Unknown model, unreadable file, or a model that does not fit it."},
        **error(429, "The job queue is full; `Retry-After` says when to try again."),
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
    engine: Annotated[
        Literal["local", "ray"],
        Form(
            description="`local`: decoded by this server's workers; `ray`: by a Ray Data actor "
            "pool on the cluster (server started with --ray; the file must be on storage the "
            "cluster's nodes see)."
        ),
    ] = "local",
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
    state.jobs.check_backlog()  # before an upload of possibly hundreds of MB is stored
    cleanup: Path | None = None
    if file is not None:
        target, cleanup = await _save_upload(file)
        display = target.name
    else:
        assert path is not None
        target = resolve_under_root(state.settings.data_root, path)
        display = path
    job = await state.jobs.create(target, display, models, stride_s, cleanup, engine=engine)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job.status()
