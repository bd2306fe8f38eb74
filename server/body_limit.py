"""Refusing request bodies above the upload limit, without reading more than the limit."""

from __future__ import annotations

from fastapi import status
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from neurocast.server.errors import too_large_detail


class _BodyTooLarge(StarletteHTTPException):
    def __init__(self) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE)


class BodySizeLimit:
    """ASGI middleware answering 413 to a body above ``max_upload_bytes``.

    A declared Content-Length above the limit is refused at once; a body without one
    (chunked) is counted as it streams in and cut off when it passes the limit.

    Parameters
    ----------
    app : ASGIApp
        The application it wraps.
    max_upload_bytes : int
        The largest body accepted.
    """

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.limit = max_upload_bytes
        self.detail = too_large_detail(max_upload_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"code": "upload_too_large", "detail": self.detail},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
