"""Python clients of the neurocast service: :class:`AsyncClient` (asyncio) and :class:`Client`.

Both speak the REST API with httpx and the result streams with websockets::

    from neurocast.clients.client import Client

    with Client("http://127.0.0.1:8000", token="...") as nc:
        session = nc.create_session({"kind": "simulator"}, models=["demo-classifier"])
        with nc.stream(session.id, outputs=["probabilities"]) as stream:
            for message in stream:
                print(message)

Stream messages are described in :mod:`neurocast.clients.streams`; the requests both clients
send are in :mod:`neurocast.clients.calls`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx

from neurocast.clients import calls
from neurocast.clients.calls import Call
from neurocast.clients.streams import AsyncStream, Stream, stream_url, subscribe_text
from neurocast.streaming.sources.specs import SourceSpec
from neurocast.wire.schemas import (
    ALL_OUTPUTS,
    Health,
    JobResults,
    JobStatus,
    ModelInfo,
    OutputName,
    ResultFormat,
    SessionStatus,
)

_T = TypeVar("_T")
_H = TypeVar("_H", httpx.Client, httpx.AsyncClient)
_S = TypeVar("_S", Stream, AsyncStream)
# several calls in a row: see neurocast.clients.calls.Flow
_Flow = Generator[Call[Any], Any, _T]


class _ClientBase(abc.ABC, Generic[_H, _S]):
    """The server URL, auth header and HTTP connection pool both clients hold."""

    _stream_type: type[_S]

    def __init__(
        self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.url = url.rstrip("/")
        token = token if token is not None else os.environ.get("NEUROCAST_TOKEN")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http: _H = self._connect(timeout_s)

    @abc.abstractmethod
    def _connect(self, timeout_s: float) -> _H:
        """The httpx client of this flavour (blocking or asyncio)."""

    def stream(
        self,
        session_id: str,
        outputs: Sequence[OutputName] = ALL_OUTPUTS,
        *,
        decimate: int = 1,
        models: Sequence[str] | None = None,
    ) -> _S:
        """A session's results, to use as a context manager and iterate.

        ``with client.stream(id) as s: for m in s`` (:class:`Stream`), or ``async with`` and
        ``async for`` with the asyncio client (:class:`AsyncStream`).
        """
        subscribe = subscribe_text(outputs, decimate, models)
        return self._stream_type(stream_url(self.url, session_id), self._headers, subscribe)


class AsyncClient(_ClientBase[httpx.AsyncClient, AsyncStream]):
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

    _stream_type = AsyncStream

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

    async def _send(self, call: Call[_T]) -> _T:
        with call.request(self._http) as request:
            return call.result(await self._http.send(request))

    async def _run(self, flow: _Flow[_T]) -> _T:
        try:
            call = next(flow)
            while True:
                call = flow.send(await self._send(call))
        except StopIteration as done:
            result: _T = done.value
            return result

    async def health(self) -> Health:
        """``GET /health``."""
        return await self._send(calls.HEALTH)

    async def models(self) -> list[ModelInfo]:
        """Installed models."""
        return await self._send(calls.MODELS)

    async def model(self, model_id: str) -> ModelInfo:
        """One model's metadata."""
        return await self._send(calls.model_call(model_id))

    async def create_session(
        self,
        source: SourceSpec | Mapping[str, Any],
        models: Sequence[str],
        *,
        stride_s: float = 0.025,
        name: str | None = None,
        max_lag_ms: float = 250.0,
    ) -> SessionStatus:
        """Start a session; check ``status`` (``failed`` comes with ``error``)."""
        call = calls.create_session_call(source, models, stride_s, name, max_lag_ms)
        return await self._send(call)

    async def session(self, session_id: str) -> SessionStatus:
        """A session's status."""
        return await self._send(calls.session_call("GET", session_id))

    async def sessions(self) -> list[SessionStatus]:
        """Every session."""
        return await self._send(calls.SESSIONS)

    async def delete_session(self, session_id: str) -> SessionStatus:
        """Stop a session; returns its final status."""
        return await self._send(calls.session_call("DELETE", session_id))

    async def submit_decode(
        self,
        file: str | Path | None = None,
        *,
        models: Sequence[str],
        stride_s: float = 0.025,
        server_path: str | None = None,
    ) -> JobStatus:
        """Start a batch job on a local file (uploaded) or a path under the server's data root."""
        return await self._send(calls.submit_call(file, models, stride_s, server_path))

    async def job(self, job_id: str, *, wait_s: float = 0.0) -> JobStatus:
        """A job's progress; with ``wait_s``, answered as soon as it finishes (long poll)."""
        return await self._send(calls.job_call(job_id, wait_s))

    async def wait_job(self, job_id: str, *, timeout_s: float | None = None) -> JobStatus:
        """Wait until a job is done, failed or cancelled (long polls, no busy polling)."""
        return await self._run(calls.wait_job(job_id, timeout_s))

    async def job_results(self, job_id: str) -> JobResults:
        """A finished job's results as JSON records."""
        return await self._send(calls.json_results_call(job_id))

    async def download_results(self, job_id: str, fmt: ResultFormat, dest: str | Path) -> Path:
        """Save a finished job's results as json, npz or parquet."""
        return calls.save(await self._send(calls.download_call(job_id, fmt)), dest)

    async def decode(
        self, file: str | Path, *, models: Sequence[str], stride_s: float = 0.025
    ) -> JobResults:
        """Upload a file, wait for the job and return its results."""
        return await self._run(calls.decode(file, models, stride_s))


class Client(_ClientBase[httpx.Client, Stream]):
    """Blocking client of a neurocast server.

    It takes the parameters of :class:`AsyncClient` and has the same methods, which return
    their results instead of awaitables.
    """

    _stream_type = Stream

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

    # mypy cannot follow the package-dir mapping to Call, so it sees no _T in the argument
    def _send(self, call: Call[_T]) -> _T:
        with call.request(self._http) as request:
            return call.result(self._http.send(request))

    def _run(self, flow: _Flow[_T]) -> _T:
        try:
            call = next(flow)
            while True:
                call = flow.send(self._send(call))
        except StopIteration as done:
            result: _T = done.value
            return result

    def health(self) -> Health:
        """``GET /health``."""
        return self._send(calls.HEALTH)

    def models(self) -> list[ModelInfo]:
        """Installed models."""
        return self._send(calls.MODELS)

    def model(self, model_id: str) -> ModelInfo:
        """One model's metadata."""
        return self._send(calls.model_call(model_id))

    def create_session(
        self,
        source: SourceSpec | Mapping[str, Any],
        models: Sequence[str],
        *,
        stride_s: float = 0.025,
        name: str | None = None,
        max_lag_ms: float = 250.0,
    ) -> SessionStatus:
        """Start a session; check ``status`` (``failed`` comes with ``error``)."""
        return self._send(calls.create_session_call(source, models, stride_s, name, max_lag_ms))

    def session(self, session_id: str) -> SessionStatus:
        """A session's status."""
        return self._send(calls.session_call("GET", session_id))

    def sessions(self) -> list[SessionStatus]:
        """Every session."""
        return self._send(calls.SESSIONS)

    def delete_session(self, session_id: str) -> SessionStatus:
        """Stop a session; returns its final status."""
        return self._send(calls.session_call("DELETE", session_id))

    def submit_decode(
        self,
        file: str | Path | None = None,
        *,
        models: Sequence[str],
        stride_s: float = 0.025,
        server_path: str | None = None,
    ) -> JobStatus:
        """Start a batch job on a local file (uploaded) or a path under the server's data root."""
        return self._send(calls.submit_call(file, models, stride_s, server_path))

    def job(self, job_id: str, *, wait_s: float = 0.0) -> JobStatus:
        """A job's progress; with ``wait_s``, answered as soon as it finishes (long poll)."""
        return self._send(calls.job_call(job_id, wait_s))

    def wait_job(self, job_id: str, *, timeout_s: float | None = None) -> JobStatus:
        """Wait until a job is done, failed or cancelled (long polls, no busy polling)."""
        return self._run(calls.wait_job(job_id, timeout_s))

    def job_results(self, job_id: str) -> JobResults:
        """A finished job's results as JSON records."""
        return self._send(calls.json_results_call(job_id))

    def download_results(self, job_id: str, fmt: ResultFormat, dest: str | Path) -> Path:
        """Save a finished job's results as json, npz or parquet."""
        return calls.save(self._send(calls.download_call(job_id, fmt)), dest)

    def decode(
        self, file: str | Path, *, models: Sequence[str], stride_s: float = 0.025
    ) -> JobResults:
        """Upload a file, wait for the job and return its results."""
        return self._run(calls.decode(file, models, stride_s))
