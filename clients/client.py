"""Python clients of the neurocast service: :class:`AsyncClient` (asyncio) and :class:`Client`.

Both speak the REST API with httpx and the result streams with websockets::

    from neurocast.clients.client import Client

    with Client("http://127.0.0.1:8000", token="...") as nc:
        session = nc.create_session({"kind": "simulator"}, models=["demo-classifier"])
        with nc.stream(session.id, outputs=["probabilities"]) as stream:
            for message in stream:
                print(message)

Stream messages are the pydantic models of :mod:`neurocast.server.schemas` (``ResultMessage``,
``EventsMessage``, ``StatusMessage``, ``DroppedMessage``, ...) or, for signal payloads,
:class:`~neurocast.server.frames.SignalFrame`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeAlias

import httpx
import websockets
import websockets.sync.client
from pydantic import TypeAdapter

from ..server.frames import SignalFrame, decode_signal_frame
from ..server.schemas import (
    ALL_OUTPUTS,
    DroppedMessage,
    ErrorMessage,
    EventsMessage,
    Health,
    JobResults,
    JobStatus,
    ModelInfo,
    ModelList,
    OutputName,
    ResultFormat,
    ResultMessage,
    ServerMessage,
    SessionCreate,
    SessionList,
    SessionStatus,
    StatusMessage,
    Subscribe,
    Subscribed,
)
from ..streaming.spec import SourceSpec

Message: TypeAlias = (
    Subscribed
    | ResultMessage
    | EventsMessage
    | StatusMessage
    | DroppedMessage
    | ErrorMessage
    | SignalFrame
)
_MESSAGE: TypeAdapter[Message] = TypeAdapter(ServerMessage)
_MAX_MESSAGE_BYTES = 64 * 1024**2
_FINISHED = ("done", "failed", "cancelled")
LONG_POLL_S = 10.0  # the server answers within this (at most 60 s), or as soon as a job ends


class NeurocastError(RuntimeError):
    """The server refused a request; ``status_code``, ``code`` and ``detail`` say why."""

    def __init__(self, status_code: int, code: str, detail: str) -> None:
        super().__init__(f"{status_code} {code}: {detail}")
        self.status_code = status_code
        self.code = code
        self.detail = detail


def quiet_http_log(args: argparse.Namespace) -> None:
    """Keep httpx's one line per request out of a command's output unless ``--verbose``."""
    if not getattr(args, "verbose", False):
        logging.getLogger("httpx").setLevel(logging.WARNING)


def parse_message(data: str | bytes) -> Message:
    """Parse one WebSocket message: JSON text to a schema model, bytes to a SignalFrame."""
    if isinstance(data, bytes | bytearray | memoryview):
        return decode_signal_frame(data)
    return _MESSAGE.validate_json(data)


def _check(response: httpx.Response) -> httpx.Response:
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


def _session_body(
    source: SourceSpec | Mapping[str, Any], models: Sequence[str], stride_s: float, name: str | None
) -> dict[str, Any]:
    src = source if isinstance(source, Mapping) else source.model_dump()
    body = {"source": dict(src), "models": list(models), "stride_s": stride_s, "name": name}
    return SessionCreate.model_validate(body).model_dump(mode="json")


def _subscribe_text(
    outputs: Sequence[OutputName], decimate: int, models: Sequence[str] | None
) -> str:
    sub = Subscribe(outputs=list(outputs), decimate=decimate, models=models)
    return sub.model_dump_json()


def _decode_form(models: Sequence[str], stride_s: float, server_path: str | None) -> dict[str, Any]:
    form: dict[str, Any] = {"models": list(models), "stride_s": str(stride_s)}
    if server_path is not None:
        form["path"] = server_path
    return form


def _wait_params(wait_s: float) -> dict[str, float]:
    return {"wait_s": wait_s} if wait_s > 0 else {}


def _next_wait(deadline: float | None) -> float:
    """Seconds of the next long poll: at most LONG_POLL_S, never past the deadline."""
    if deadline is None:
        return LONG_POLL_S
    return max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))


def _ws_url(base: str, session_id: str) -> str:
    url = httpx.URL(base)
    scheme = "wss" if url.scheme == "https" else "ws"
    return str(url.copy_with(scheme=scheme, path=f"/v1/sessions/{session_id}/stream"))


def _token(token: str | None) -> str | None:
    return token if token is not None else os.environ.get("NEUROCAST_TOKEN")


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class AsyncStream:
    """A session's result stream (asyncio); use as ``async with`` and ``async for``."""

    def __init__(self, url: str, headers: dict[str, str], subscribe: str) -> None:
        self._url = url
        self._headers = headers
        self._subscribe = subscribe
        self._ws: websockets.ClientConnection | None = None

    async def __aenter__(self) -> Self:
        self._ws = await websockets.connect(
            self._url, additional_headers=self._headers, max_size=_MAX_MESSAGE_BYTES
        )
        await self._ws.send(self._subscribe)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ws is not None:
            await self._ws.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        if self._ws is None:
            raise RuntimeError("Use the stream inside 'async with'.")
        try:
            data = await self._ws.recv()
        except websockets.ConnectionClosedOK:
            raise StopAsyncIteration from None
        return parse_message(data)

    async def subscribe(
        self,
        outputs: Sequence[OutputName] = ALL_OUTPUTS,
        decimate: int = 1,
        models: Sequence[str] | None = None,
    ) -> None:
        """Change what this stream receives."""
        if self._ws is None:
            raise RuntimeError("Use the stream inside 'async with'.")
        await self._ws.send(_subscribe_text(outputs, decimate, models))


class Stream:
    """A session's result stream (blocking); use as ``with`` and ``for``."""

    def __init__(self, url: str, headers: dict[str, str], subscribe: str) -> None:
        self._url = url
        self._headers = headers
        self._subscribe = subscribe
        self._ws: websockets.sync.client.ClientConnection | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        self._ws = self._stack.enter_context(
            websockets.sync.client.connect(
                self._url, additional_headers=self._headers, max_size=_MAX_MESSAGE_BYTES
            )
        )
        self._ws.send(self._subscribe)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Message:
        return self.receive()

    def receive(self, timeout: float | None = None) -> Message:
        """The next message; raises ``TimeoutError`` after ``timeout`` seconds."""
        if self._ws is None:
            raise RuntimeError("Use the stream inside 'with'.")
        try:
            data = self._ws.recv(timeout=timeout)
        except websockets.ConnectionClosedOK:
            raise StopIteration from None
        return parse_message(data)

    def subscribe(
        self,
        outputs: Sequence[OutputName] = ALL_OUTPUTS,
        decimate: int = 1,
        models: Sequence[str] | None = None,
    ) -> None:
        """Change what this stream receives."""
        if self._ws is None:
            raise RuntimeError("Use the stream inside 'with'.")
        self._ws.send(_subscribe_text(outputs, decimate, models))


class AsyncClient:
    """asyncio client of a neurocast server.

    Parameters
    ----------
    url : str
        The server, e.g. ``http://127.0.0.1:8000``.
    token : str | None
        Bearer token (default ``NEUROCAST_TOKEN``).
    timeout_s : float
        Timeout of each REST call, in seconds.
    """

    def __init__(
        self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = _headers(_token(token))
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=timeout_s)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def health(self) -> Health:
        """``GET /health``."""
        return Health.model_validate_json(_check(await self._http.get("/health")).content)

    async def models(self) -> list[ModelInfo]:
        """Installed models."""
        r = _check(await self._http.get("/v1/models"))
        return ModelList.model_validate_json(r.content).models

    async def model(self, model_id: str) -> ModelInfo:
        """One model's metadata."""
        r = _check(await self._http.get(f"/v1/models/{model_id}"))
        return ModelInfo.model_validate_json(r.content)

    async def create_session(
        self,
        source: SourceSpec | Mapping[str, Any],
        models: Sequence[str],
        *,
        stride_s: float = 0.025,
        name: str | None = None,
    ) -> SessionStatus:
        """Start a session; check ``status`` (``failed`` comes with ``error``)."""
        body = _session_body(source, models, stride_s, name)
        r = _check(await self._http.post("/v1/sessions", json=body))
        return SessionStatus.model_validate_json(r.content)

    async def session(self, session_id: str) -> SessionStatus:
        """A session's status."""
        r = _check(await self._http.get(f"/v1/sessions/{session_id}"))
        return SessionStatus.model_validate_json(r.content)

    async def sessions(self) -> list[SessionStatus]:
        """Every session."""
        r = _check(await self._http.get("/v1/sessions"))
        return SessionList.model_validate_json(r.content).sessions

    async def delete_session(self, session_id: str) -> SessionStatus:
        """Stop a session; returns its final status."""
        r = _check(await self._http.delete(f"/v1/sessions/{session_id}"))
        return SessionStatus.model_validate_json(r.content)

    def stream(
        self,
        session_id: str,
        outputs: Sequence[OutputName] = ALL_OUTPUTS,
        *,
        decimate: int = 1,
        models: Sequence[str] | None = None,
    ) -> AsyncStream:
        """A session's results: ``async with client.stream(id) as s: async for m in s``."""
        return AsyncStream(
            _ws_url(self.url, session_id), self._headers, _subscribe_text(outputs, decimate, models)
        )

    async def submit_decode(
        self,
        file: str | Path | None = None,
        *,
        models: Sequence[str],
        stride_s: float = 0.025,
        server_path: str | None = None,
    ) -> JobStatus:
        """Start a batch job on a local file (uploaded) or a path under the server's data root."""
        form = _decode_form(models, stride_s, server_path)
        if file is None:
            r = await self._http.post("/v1/decode", data=form)
        else:
            path = Path(file)
            with path.open("rb") as fh:
                r = await self._http.post("/v1/decode", data=form, files={"file": (path.name, fh)})
        return JobStatus.model_validate_json(_check(r).content)

    async def job(self, job_id: str, *, wait_s: float = 0.0) -> JobStatus:
        """A job's progress; with ``wait_s``, answered as soon as it finishes (long poll)."""
        r = await self._http.get(f"/v1/jobs/{job_id}", params=_wait_params(wait_s))
        return JobStatus.model_validate_json(_check(r).content)

    async def wait_job(self, job_id: str, *, timeout_s: float | None = None) -> JobStatus:
        """Wait until a job is done, failed or cancelled (long polls, no busy polling)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = await self.job(job_id, wait_s=_next_wait(deadline))
            if job.status in _FINISHED:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Job {job_id} still {job.status} after {timeout_s} s.")

    async def job_results(self, job_id: str) -> JobResults:
        """A finished job's results as JSON records."""
        r = _check(await self._http.get(f"/v1/jobs/{job_id}/results", params={"format": "json"}))
        return JobResults.model_validate_json(r.content)

    async def download_results(self, job_id: str, fmt: ResultFormat, dest: str | Path) -> Path:
        """Save a finished job's results as json, npz or parquet."""
        r = _check(await self._http.get(f"/v1/jobs/{job_id}/results", params={"format": fmt}))
        dest = Path(dest)
        dest.write_bytes(r.content)
        return dest

    async def decode(
        self, file: str | Path, *, models: Sequence[str], stride_s: float = 0.025
    ) -> JobResults:
        """Upload a file, wait for the job and return its results."""
        job = await self.submit_decode(file, models=models, stride_s=stride_s)
        job = await self.wait_job(job.id)
        if job.status != "done":
            raise NeurocastError(422, f"job_{job.status}", job.error or f"Job {job.status}.")
        return await self.job_results(job.id)


class Client:
    """Blocking client of a neurocast server (same methods as :class:`AsyncClient`).

    Parameters
    ----------
    url : str
        The server, e.g. ``http://127.0.0.1:8000``.
    token : str | None
        Bearer token (default ``NEUROCAST_TOKEN``).
    timeout_s : float
        Timeout of each REST call, in seconds.
    """

    def __init__(
        self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = _headers(_token(token))
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def health(self) -> Health:
        """``GET /health``."""
        return Health.model_validate_json(_check(self._http.get("/health")).content)

    def models(self) -> list[ModelInfo]:
        """Installed models."""
        return ModelList.model_validate_json(_check(self._http.get("/v1/models")).content).models

    def model(self, model_id: str) -> ModelInfo:
        """One model's metadata."""
        return ModelInfo.model_validate_json(
            _check(self._http.get(f"/v1/models/{model_id}")).content
        )

    def create_session(
        self,
        source: SourceSpec | Mapping[str, Any],
        models: Sequence[str],
        *,
        stride_s: float = 0.025,
        name: str | None = None,
    ) -> SessionStatus:
        """Start a session; check ``status`` (``failed`` comes with ``error``)."""
        body = _session_body(source, models, stride_s, name)
        r = _check(self._http.post("/v1/sessions", json=body))
        return SessionStatus.model_validate_json(r.content)

    def session(self, session_id: str) -> SessionStatus:
        """A session's status."""
        r = _check(self._http.get(f"/v1/sessions/{session_id}"))
        return SessionStatus.model_validate_json(r.content)

    def sessions(self) -> list[SessionStatus]:
        """Every session."""
        r = _check(self._http.get("/v1/sessions"))
        return SessionList.model_validate_json(r.content).sessions

    def delete_session(self, session_id: str) -> SessionStatus:
        """Stop a session; returns its final status."""
        r = _check(self._http.delete(f"/v1/sessions/{session_id}"))
        return SessionStatus.model_validate_json(r.content)

    def stream(
        self,
        session_id: str,
        outputs: Sequence[OutputName] = ALL_OUTPUTS,
        *,
        decimate: int = 1,
        models: Sequence[str] | None = None,
    ) -> Stream:
        """A session's results: ``with client.stream(id) as s: for m in s``."""
        return Stream(
            _ws_url(self.url, session_id), self._headers, _subscribe_text(outputs, decimate, models)
        )

    def submit_decode(
        self,
        file: str | Path | None = None,
        *,
        models: Sequence[str],
        stride_s: float = 0.025,
        server_path: str | None = None,
    ) -> JobStatus:
        """Start a batch job on a local file (uploaded) or a path under the server's data root."""
        form = _decode_form(models, stride_s, server_path)
        if file is None:
            r = self._http.post("/v1/decode", data=form)
        else:
            path = Path(file)
            with path.open("rb") as fh:
                r = self._http.post("/v1/decode", data=form, files={"file": (path.name, fh)})
        return JobStatus.model_validate_json(_check(r).content)

    def job(self, job_id: str, *, wait_s: float = 0.0) -> JobStatus:
        """A job's progress; with ``wait_s``, answered as soon as it finishes (long poll)."""
        r = self._http.get(f"/v1/jobs/{job_id}", params=_wait_params(wait_s))
        return JobStatus.model_validate_json(_check(r).content)

    def wait_job(self, job_id: str, *, timeout_s: float | None = None) -> JobStatus:
        """Wait until a job is done, failed or cancelled (long polls, no busy polling)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.job(job_id, wait_s=_next_wait(deadline))
            if job.status in _FINISHED:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Job {job_id} still {job.status} after {timeout_s} s.")

    def job_results(self, job_id: str) -> JobResults:
        """A finished job's results as JSON records."""
        r = _check(self._http.get(f"/v1/jobs/{job_id}/results", params={"format": "json"}))
        return JobResults.model_validate_json(r.content)

    def download_results(self, job_id: str, fmt: ResultFormat, dest: str | Path) -> Path:
        """Save a finished job's results as json, npz or parquet."""
        r = _check(self._http.get(f"/v1/jobs/{job_id}/results", params={"format": fmt}))
        dest = Path(dest)
        dest.write_bytes(r.content)
        return dest

    def decode(
        self, file: str | Path, *, models: Sequence[str], stride_s: float = 0.025
    ) -> JobResults:
        """Upload a file, wait for the job and return its results."""
        job = self.submit_decode(file, models=models, stride_s=stride_s)
        job = self.wait_job(job.id)
        if job.status != "done":
            raise NeurocastError(422, f"job_{job.status}", job.error or f"Job {job.status}.")
        return self.job_results(job.id)
