"""Running the app under uvicorn: in the foreground (``neurocast serve``) or in a thread."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Self

import uvicorn
from fastapi import FastAPI

from neurocast.server.config import Settings
from neurocast.server.deps import AppState
from neurocast.server.logs import redact_logs

#: Seconds between the keepalive pings uvicorn sends on each WebSocket.
WS_PING_INTERVAL_S = 20.0


def _settings(app: FastAPI) -> Settings | None:
    state: AppState | None = getattr(app.state, "neurocast", None)
    return state.settings if state is not None else None


def uvicorn_config(app: FastAPI, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration the service runs with.

    Per-message compression is off: results are small or binary float32, and deflating them
    costs more latency than the bytes it saves on a lab network. A client that stops reading
    also stops answering pings; the ping timeout is the idle limit
    (``NEUROCAST_WS_IDLE_TIMEOUT_S``), so that a client that only reads slowly is closed by
    that documented limit (code 1008) and not earlier by the keepalive (1011).
    """
    settings = _settings(app)
    idle_s = settings.ws_idle_timeout_s if settings is not None else 60.0
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ws_per_message_deflate=False,
        ws_ping_interval=WS_PING_INTERVAL_S,
        ws_ping_timeout=max(idle_s, WS_PING_INTERVAL_S),
        timeout_graceful_shutdown=5,
    )
    # uvicorn configured its loggers just now: put the token filter on their new handlers
    redact_logs(settings.effective_token if settings is not None else None)
    return config


class NeurocastServer(uvicorn.Server):
    """uvicorn's server, ending live sessions before uvicorn closes the connections.

    uvicorn closes every WebSocket with 1012 as soon as it starts shutting down, before the
    application hears of it; this lets the sessions first send each subscriber a last
    ``status`` and close with 1012 themselves.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop the live sessions (final status, close 1012), then shut down as uvicorn does."""
        app = self.config.app
        state: AppState | None = None
        if isinstance(app, FastAPI):
            state = getattr(app.state, "neurocast", None)
        if state is not None:
            for server in self.servers:  # no new connections while the sessions end
                server.close()
            await state.sessions.shutdown(close_code=1012)
        await super().shutdown(sockets)


class ServerThread:
    """The app served by uvicorn in a background thread (demo, tests, benchmarks).

    Parameters
    ----------
    app : FastAPI
        The application.
    host : str
        Interface to bind.
    port : int
        TCP port; 0 picks a free one (see :attr:`url`).
    log_level : str
        uvicorn's log level.
    """

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        self.server = NeurocastServer(uvicorn_config(app, host, port, log_level))
        self.host = host
        self._thread = threading.Thread(
            target=self.server.run, name="neurocast-uvicorn", daemon=True
        )

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> Self:
        """Start serving and wait until the socket accepts connections.

        Raises
        ------
        RuntimeError
            If the server did not start within ``timeout_s`` (e.g. the port is taken).
        """
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"The server did not start on {self.host}; is the port already in use?"
                )
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        """Shut down (sessions and jobs stop) and wait for the thread."""
        self.server.should_exit = True
        self._thread.join(timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
