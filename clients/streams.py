"""A session's result stream over WebSocket: :class:`Stream` (blocking), :class:`AsyncStream`.

Messages are the pydantic models of :mod:`neurocast.wire.schemas` (``ResultMessage``,
``EventsMessage``, ``StatusMessage``, ``DroppedMessage``, ...) or, for signal payloads,
:class:`~neurocast.wire.frames.SignalFrame`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from types import TracebackType
from typing import Self, TypeAlias

import httpx
import websockets
import websockets.sync.client
from pydantic import TypeAdapter

from neurocast.wire.frames import SignalFrame, decode_signal_frame
from neurocast.wire.schemas import (
    ALL_OUTPUTS,
    DroppedMessage,
    ErrorMessage,
    EventsMessage,
    OutputName,
    ResultMessage,
    ServerMessage,
    StatusMessage,
    Subscribe,
    Subscribed,
)

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
MAX_MESSAGE_BYTES = 64 * 1024**2


def parse_message(data: str | bytes) -> Message:
    """Parse one WebSocket message: JSON text to a schema model, bytes to a SignalFrame."""
    if isinstance(data, bytes | bytearray | memoryview):
        return decode_signal_frame(data)
    return _MESSAGE.validate_json(data)


def subscribe_text(
    outputs: Sequence[OutputName], decimate: int, models: Sequence[str] | None
) -> str:
    """The ``subscribe`` message choosing what a stream receives."""
    chosen = None if models is None else list(models)
    sub = Subscribe(outputs=list(outputs), decimate=decimate, models=chosen)
    return sub.model_dump_json()


def stream_url(base: str, session_id: str) -> str:
    """The WebSocket URL of a session's stream on the server at ``base``."""
    url = httpx.URL(base)
    scheme = "wss" if url.scheme == "https" else "ws"
    return str(url.copy_with(scheme=scheme, path=f"/v1/sessions/{session_id}/stream"))


class _StreamBase:
    """Where a stream connects, with which headers, and its first message."""

    def __init__(self, url: str, headers: dict[str, str], subscribe: str) -> None:
        self._url = url
        self._headers = headers
        self._subscribe = subscribe


class AsyncStream(_StreamBase):
    """A session's result stream (asyncio); use as ``async with`` and ``async for``."""

    _ws: websockets.ClientConnection | None = None

    async def __aenter__(self) -> Self:
        self._ws = await websockets.connect(
            self._url, additional_headers=self._headers, max_size=MAX_MESSAGE_BYTES
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
        try:
            data = await self._open().recv()
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
        await self._open().send(subscribe_text(outputs, decimate, models))

    def _open(self) -> websockets.ClientConnection:
        if self._ws is None:
            raise RuntimeError("Use the stream inside 'async with'.")
        return self._ws


class Stream(_StreamBase):
    """A session's result stream (blocking); use as ``with`` and ``for``."""

    _ws: websockets.sync.client.ClientConnection | None = None

    def __enter__(self) -> Self:
        self._stack = contextlib.ExitStack()
        self._ws = self._stack.enter_context(
            websockets.sync.client.connect(
                self._url, additional_headers=self._headers, max_size=MAX_MESSAGE_BYTES
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
        try:
            data = self._open().recv(timeout=timeout)
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
        self._open().send(subscribe_text(outputs, decimate, models))

    def _open(self) -> websockets.sync.client.ClientConnection:
        if self._ws is None:
            raise RuntimeError("Use the stream inside 'with'.")
        return self._ws
