"""neurocast.server: the decoding service (REST, WebSocket result streams, dashboard)."""

from neurocast.server.app import create_app
from neurocast.server.config import Settings

__all__ = ["Settings", "create_app"]
