"""The REST calls of the Python clients, free of any I/O.

Each call is a :class:`Call`: the request to send and how to read its answer. Operations of
several calls (waiting for a job, decoding a file) are generators that yield calls and receive
their answers, so that the blocking and the asyncio client run the same logic and differ only
in how they send.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from neurocast.streaming.sources.specs import SourceSpec
from neurocast.wire.schemas import (
    FINISHED_JOB_STATES,
    Health,
    JobResults,
    JobStatus,
    ModelInfo,
    ModelList,
    ResultFormat,
    SessionCreate,
    SessionList,
    SessionStatus,
)

LONG_POLL_S = 10.0  # the server answers within this (at most 60 s), or as soon as a job ends
_T = TypeVar("_T")


class NeurocastError(RuntimeError):
    """The server refused a request; ``status_code``, ``code`` and ``detail`` say why."""

    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(f"{status_code} {code}: {detail}")
        self.status_code = status_code
        self.code = code
        self.detail = detail


def check(response: httpx.Response) -> httpx.Response:
    """The response when it succeeded; :class:`NeurocastError` with the server's reason if not."""
    if response.is_success:
        return response
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, str):  # a validation error lists its problems
        detail = json.dumps(detail) if detail is not None else response.text[:500]
    code = body.get("code", "validation_error") if isinstance(body, dict) else "http_error"
    raise NeurocastError(response.status_code, str(code), detail)


@dataclass(frozen=True)
class Call(Generic[_T]):
    """One REST call: the request both clients send and how its answer is read."""

    method: str
    path: str
    parse: Callable[[bytes], _T]
    params: dict[str, Any] | None = None
    json: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    upload: Path | None = None

    @contextlib.contextmanager
    def request(self, http: httpx.Client | httpx.AsyncClient) -> Iterator[httpx.Request]:
        """The request, with the client's base URL and headers (and the upload, open)."""
        with contextlib.ExitStack() as stack:
            files = None
            if self.upload is not None:
                files = {"file": (self.upload.name, stack.enter_context(self.upload.open("rb")))}
            yield http.build_request(
                self.method,
                self.path,
                params=self.params,
                json=self.json,
                data=self.data,
                files=files,
            )

    def result(self, response: httpx.Response) -> _T:
        """The parsed answer; raises :class:`NeurocastError` when the server refused."""
        return self.parse(check(response).content)


Flow = Generator[Call[Any], Any, _T]
"""Several calls: yields each call and receives its parsed answer; returns the outcome."""


def _as_is(content: bytes) -> bytes:
    return content


HEALTH = Call("GET", "/health", Health.model_validate_json)
MODELS = Call("GET", "/v1/models", lambda b: ModelList.model_validate_json(b).models)
SESSIONS = Call("GET", "/v1/sessions", lambda b: SessionList.model_validate_json(b).sessions)


def model_call(model_id: str) -> Call[ModelInfo]:
    """``GET /v1/models/{id}``."""
    return Call("GET", f"/v1/models/{model_id}", ModelInfo.model_validate_json)


def session_call(method: str, session_id: str) -> Call[SessionStatus]:
    """``GET`` or ``DELETE /v1/sessions/{id}``."""
    return Call(method, f"/v1/sessions/{session_id}", SessionStatus.model_validate_json)


def create_session_call(
    source: SourceSpec | Mapping[str, Any],
    models: Sequence[str],
    stride_s: float,
    name: str | None,
    max_lag_ms: float = 250.0,
) -> Call[SessionStatus]:
    """``POST /v1/sessions``, checked against the request schema before it is sent."""
    src = source if isinstance(source, Mapping) else source.model_dump()
    body = {
        "source": dict(src),
        "models": list(models),
        "stride_s": stride_s,
        "max_lag_ms": max_lag_ms,
        "name": name,
    }
    valid = SessionCreate.model_validate(body).model_dump(mode="json")
    return Call("POST", "/v1/sessions", SessionStatus.model_validate_json, json=valid)


def submit_call(
    file: str | Path | None, models: Sequence[str], stride_s: float, server_path: str | None
) -> Call[JobStatus]:
    """``POST /v1/decode`` of a local file (uploaded) or a path under the server's data root."""
    form: dict[str, Any] = {"models": list(models), "stride_s": str(stride_s)}
    if server_path is not None:
        form["path"] = server_path
    upload = None if file is None else Path(file)
    return Call("POST", "/v1/decode", JobStatus.model_validate_json, data=form, upload=upload)


def job_call(job_id: str, wait_s: float) -> Call[JobStatus]:
    """``GET /v1/jobs/{id}``, as a long poll when ``wait_s`` is positive."""
    params = {"wait_s": wait_s} if wait_s > 0 else {}
    return Call("GET", f"/v1/jobs/{job_id}", JobStatus.model_validate_json, params=params)


def json_results_call(job_id: str) -> Call[JobResults]:
    """``GET /v1/jobs/{id}/results`` as JSON records."""
    return Call(
        "GET",
        f"/v1/jobs/{job_id}/results",
        JobResults.model_validate_json,
        params={"format": "json"},
    )


def download_call(job_id: str, fmt: ResultFormat) -> Call[bytes]:
    """``GET /v1/jobs/{id}/results`` in ``fmt``, as the bytes to save."""
    return Call("GET", f"/v1/jobs/{job_id}/results", _as_is, params={"format": fmt})


def save(content: bytes, dest: str | Path) -> Path:
    """Write downloaded results to ``dest``; returns its path."""
    dest = Path(dest)
    dest.write_bytes(content)
    return dest


def wait_job(job_id: str, timeout_s: float | None) -> Flow[JobStatus]:
    """Long polls until a job is done, failed or cancelled.

    Raises
    ------
    TimeoutError
        When ``timeout_s`` passed first.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        wait = LONG_POLL_S
        if deadline is not None:  # never poll past the deadline
            wait = max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))
        job: JobStatus = yield job_call(job_id, wait)
        if job.status in FINISHED_JOB_STATES:
            return job
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"Job {job.id} still {job.status} after {timeout_s} s.")


def decode(file: str | Path, models: Sequence[str], stride_s: float) -> Flow[JobResults]:
    """Upload a file, wait for its job and fetch the results.

    Raises
    ------
    NeurocastError
        ``job_failed`` or ``job_cancelled`` when the job did not finish.
    """
    submitted: JobStatus = yield submit_call(file, models, stride_s, None)
    job = yield from wait_job(submitted.id, None)
    if job.status != "done":
        raise NeurocastError(422, f"job_{job.status}", job.error or f"Job {job.status}.")
    results: JobResults = yield json_results_call(job.id)
    return results
