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

import abc
import argparse
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeAlias, TypeVar

import httpx
import websockets
import websockets.sync.client
from pydantic import TypeAdapter

from neurocast.server.frames import SignalFrame, decode_signal_frame
from neurocast.server.schemas import (
    ALL_OUTPUTS,
    FINISHED_JOB_STATES,
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
from neurocast.streaming.sources.specs import SourceSpec

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
LONG_POLL_S = 10.0  # the server answers within this (at most 60 s), or as soon as a job ends
_T = TypeVar("_T")
_H = TypeVar("_H", httpx.Client, httpx.AsyncClient)


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


@dataclass(frozen=True)
class _Call(Generic[_T]):
    """One REST call: the request both clients send and how its answer is read."""

    method: str
    path: str
    parse: Callable[[bytes], _T]
    params: dict[str, Any] | None = None
    json: dict[str, Any] | None = None
    data: dict[str, Any] | None = None

    def request(self, http: httpx.Client | httpx.AsyncClient, files: Any = None) -> httpx.Request:
        """The request, with the client's base URL and headers."""
        return http.build_request(
            self.method,
            self.path,
            params=self.params,
            json=self.json,
            data=self.data,
            files=files,
        )

    def result(self, response: httpx.Response) -> _T:
        """The parsed answer; raises :class:`NeurocastError` when the server refused."""
        return self.parse(_check(response).content)


def _as_is(content: bytes) -> bytes:
    return content


_HEALTH = _Call("GET", "/health", Health.model_validate_json)
_MODELS = _Call("GET", "/v1/models", lambda b: ModelList.model_validate_json(b).models)
_SESSIONS = _Call("GET", "/v1/sessions", lambda b: SessionList.model_validate_json(b).sessions)


def _model_call(model_id: str) -> _Call[ModelInfo]:
    return _Call("GET", f"/v1/models/{model_id}", ModelInfo.model_validate_json)


def _session_call(method: str, session_id: str) -> _Call[SessionStatus]:
    return _Call(method, f"/v1/sessions/{session_id}", SessionStatus.model_validate_json)


def _create_session_call(
    source: SourceSpec | Mapping[str, Any], models: Sequence[str], stride_s: float, name: str | None
) -> _Call[SessionStatus]:
    src = source if isinstance(source, Mapping) else source.model_dump()
    body = {"source": dict(src), "models": list(models), "stride_s": stride_s, "name": name}
    valid = SessionCreate.model_validate(body).model_dump(mode="json")
    return _Call("POST", "/v1/sessions", SessionStatus.model_validate_json, json=valid)


def _submit_call(
    models: Sequence[str], stride_s: float, server_path: str | None
) -> _Call[JobStatus]:
    form: dict[str, Any] = {"models": list(models), "stride_s": str(stride_s)}
    if server_path is not None:
        form["path"] = server_path
    return _Call("POST", "/v1/decode", JobStatus.model_validate_json, data=form)


def _job_call(job_id: str, wait_s: float) -> _Call[JobStatus]:
    params = {"wait_s": wait_s} if wait_s > 0 else {}
    return _Call("GET", f"/v1/jobs/{job_id}", JobStatus.model_validate_json, params=params)


def _results_call(job_id: str, fmt: ResultFormat, parse: Callable[[bytes], _T]) -> _Call[_T]:
    return _Call("GET", f"/v1/jobs/{job_id}/results", parse, params={"format": fmt})


@contextlib.contextmanager
def _upload(file: str | Path | None) -> Iterator[dict[str, Any] | None]:
    """The multipart ``files`` of a decode request: the open file, or None for a server path."""
    if file is None:
        yield None
        return
    path = Path(file)
    with path.open("rb") as fh:
        yield {"file": (path.name, fh)}


def _save(content: bytes, dest: str | Path) -> Path:
    dest = Path(dest)
    dest.write_bytes(content)
    return dest


def _deadline(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else time.monotonic() + timeout_s


def _next_wait(deadline: float | None) -> float:
    """Seconds of the next long poll: at most LONG_POLL_S, never past the deadline."""
    if deadline is None:
        return LONG_POLL_S
    return max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))


def _finished(job: JobStatus, deadline: float | None, timeout_s: float | None) -> bool:
    """True once the job has ended; ``TimeoutError`` when the deadline passed before that."""
    if job.status in FINISHED_JOB_STATES:
        return True
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError(f"Job {job.id} still {job.status} after {timeout_s} s.")
    return False


def _require_done(job: JobStatus) -> None:
    if job.status != "done":
        raise NeurocastError(422, f"job_{job.status}", job.error or f"Job {job.status}.")


def _subscribe_text(
    outputs: Sequence[OutputName], decimate: int, models: Sequence[str] | None
) -> str:
    sub = Subscribe(outputs=list(outputs), decimate=decimate, models=models)
    return sub.model_dump_json()


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


class _ClientBase(abc.ABC, Generic[_H]):
    """The server URL, auth header and HTTP connection pool both clients hold."""

    def __init__(
        self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = _headers(_token(token))
        self._http: _H = self._connect(timeout_s)

    @abc.abstractmethod
    def _connect(self, timeout_s: float) -> _H:
        """The httpx client of this flavour (blocking or asyncio)."""

    def _stream_args(
        self,
        session_id: str,
        outputs: Sequence[OutputName],
        decimate: int,
        models: Sequence[str] | None,
    ) -> tuple[str, dict[str, str], str]:
        """URL, headers and first message of a session's result stream."""
        subscribe = _subscribe_text(outputs, decimate, models)
        return _ws_url(self.url, session_id), self._headers, subscribe


class AsyncClient(_ClientBase[httpx.AsyncClient]):
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

    def _connect(self, timeout_s: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=timeout_s)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def _send(self, call: _Call[_T], files: Any = None) -> _T:
        return call.result(await self._http.send(call.request(self._http, files)))

    async def health(self) -> Health:
        """``GET /health``."""
        return await self._send(_HEALTH)

    async def models(self) -> list[ModelInfo]:
        """Installed models."""
        return await self._send(_MODELS)

    async def model(self, model_id: str) -> ModelInfo:
        """One model's metadata."""
        return await self._send(_model_call(model_id))

    async def create_session(
        self,
        source: SourceSpec | Mapping[str, Any],
        models: Sequence[str],
        *,
        stride_s: float = 0.025,
        name: str | None = None,
    ) -> SessionStatus:
        """Start a session; check ``status`` (``failed`` comes with ``error``)."""
        return await self._send(_create_session_call(source, models, stride_s, name))

    async def session(self, session_id: str) -> SessionStatus:
        """A session's status."""
        return await self._send(_session_call("GET", session_id))

    async def sessions(self) -> list[SessionStatus]:
        """Every session."""
        return await self._send(_SESSIONS)

    async def delete_session(self, session_id: str) -> SessionStatus:
        """Stop a session; returns its final status."""
        return await self._send(_session_call("DELETE", session_id))

    def stream(
        self,
        session_id: str,
        outputs: Sequence[OutputName] = ALL_OUTPUTS,
        *,
        decimate: int = 1,
        models: Sequence[str] | None = None,
    ) -> AsyncStream:
        """A session's results: ``async with client.stream(id) as s: async for m in s``."""
        return AsyncStream(*self._stream_args(session_id, outputs, decimate, models))

    async def submit_decode(
        self,
        file: str | Path | None = None,
        *,
        models: Sequence[str],
        stride_s: float = 0.025,
        server_path: str | None = None,
    ) -> JobStatus:
        """Start a batch job on a local file (uploaded) or a path under the server's data root."""
        with _upload(file) as files:
            return await self._send(_submit_call(models, stride_s, server_path), files)

    async def job(self, job_id: str, *, wait_s: float = 0.0) -> JobStatus:
        """A job's progress; with ``wait_s``, answered as soon as it finishes (long poll)."""
        return await self._send(_job_call(job_id, wait_s))

    async def wait_job(self, job_id: str, *, timeout_s: float | None = None) -> JobStatus:
        """Wait until a job is done, failed or cancelled (long polls, no busy polling)."""
        deadline = _deadline(timeout_s)
        while True:
            job = await self.job(job_id, wait_s=_next_wait(deadline))
            if _finished(job, deadline, timeout_s):
                return job

    async def job_results(self, job_id: str) -> JobResults:
        """A finished job's results as JSON records."""
        return await self._send(_results_call(job_id, "json", JobResults.model_validate_json))

    async def download_results(self, job_id: str, fmt: ResultFormat, dest: str | Path) -> Path:
        """Save a finished job's results as json, npz or parquet."""
        return _save(await self._send(_results_call(job_id, fmt, _as_is)), dest)

    async def decode(
        self, file: str | Path, *, models: Sequence[str], stride_s: float = 0.025
    ) -> JobResults:
        """Upload a file, wait for the job and return its results."""
        job = await self.submit_decode(file, models=models, stride_s=stride_s)
        job = await self.wait_job(job.id)
        _require_done(job)
        return await self.job_results(job.id)


class Client(_ClientBase[httpx.Client]):
    """Blocking client of a neurocast server.

    It takes the parameters of :class:`AsyncClient` and has the same methods, which return
    their results instead of awaitables.
    """

    def _connect(self, timeout_s: float) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def _send(self, call: _Call[_T], files: Any = None) -> _T:
        return call.result(self._http.send(call.request(self._http, files)))

    def health(self) -> Health:
        """``GET /health``."""
        return self._send(_HEALTH)

    def models(self) -> list[ModelInfo]:
        """Installed models."""
        return self._send(_MODELS)

    def model(self, model_id: str) -> ModelInfo:
        """One model's metadata."""
        return self._send(_model_call(model_id))

    def create_session(
        self,
        source: SourceSpec | Mapping[str, Any],
        models: Sequence[str],
        *,
        stride_s: float = 0.025,
        name: str | None = None,
    ) -> SessionStatus:
        """Start a session; check ``status`` (``failed`` comes with ``error``)."""
        return self._send(_create_session_call(source, models, stride_s, name))

    def session(self, session_id: str) -> SessionStatus:
        """A session's status."""
        return self._send(_session_call("GET", session_id))

    def sessions(self) -> list[SessionStatus]:
        """Every session."""
        return self._send(_SESSIONS)

    def delete_session(self, session_id: str) -> SessionStatus:
        """Stop a session; returns its final status."""
        return self._send(_session_call("DELETE", session_id))

    def stream(
        self,
        session_id: str,
        outputs: Sequence[OutputName] = ALL_OUTPUTS,
        *,
        decimate: int = 1,
        models: Sequence[str] | None = None,
    ) -> Stream:
        """A session's results: ``with client.stream(id) as s: for m in s``."""
        return Stream(*self._stream_args(session_id, outputs, decimate, models))

    def submit_decode(
        self,
        file: str | Path | None = None,
        *,
        models: Sequence[str],
        stride_s: float = 0.025,
        server_path: str | None = None,
    ) -> JobStatus:
        """Start a batch job on a local file (uploaded) or a path under the server's data root."""
        with _upload(file) as files:
            return self._send(_submit_call(models, stride_s, server_path), files)

    def job(self, job_id: str, *, wait_s: float = 0.0) -> JobStatus:
        """A job's progress; with ``wait_s``, answered as soon as it finishes (long poll)."""
        return self._send(_job_call(job_id, wait_s))

    def wait_job(self, job_id: str, *, timeout_s: float | None = None) -> JobStatus:
        """Wait until a job is done, failed or cancelled (long polls, no busy polling)."""
        deadline = _deadline(timeout_s)
        while True:
            job = self.job(job_id, wait_s=_next_wait(deadline))
            if _finished(job, deadline, timeout_s):
                return job

    def job_results(self, job_id: str) -> JobResults:
        """A finished job's results as JSON records."""
        return self._send(_results_call(job_id, "json", JobResults.model_validate_json))

    def download_results(self, job_id: str, fmt: ResultFormat, dest: str | Path) -> Path:
        """Save a finished job's results as json, npz or parquet."""
        return _save(self._send(_results_call(job_id, fmt, _as_is)), dest)

    def decode(
        self, file: str | Path, *, models: Sequence[str], stride_s: float = 0.025
    ) -> JobResults:
        """Upload a file, wait for the job and return its results."""
        job = self.submit_decode(file, models=models, stride_s=stride_s)
        job = self.wait_job(job.id)
        _require_done(job)
        return self.job_results(job.id)
