"""Running the app under uvicorn: in the foreground (``neurocast serve``) or in a thread."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Self

import uvicorn
from fastapi import FastAPI


def uvicorn_config(app: FastAPI, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration the service runs with.

    Per-message compression is off: results are small or binary float32, and deflating them
    costs more latency than the bytes it saves on a lab network.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
    )


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
        self.server = uvicorn.Server(uvicorn_config(app, host, port, log_level))
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
