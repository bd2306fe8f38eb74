"""neurocast.clients: the Python clients of the service and the ``neurocast`` command line."""

from neurocast.clients.calls import NeurocastError
from neurocast.clients.client import AsyncClient, Client
from neurocast.clients.streams import AsyncStream, Message, Stream, parse_message

__all__ = [
    "AsyncClient",
    "AsyncStream",
    "Client",
    "Message",
    "NeurocastError",
    "Stream",
    "parse_message",
]
