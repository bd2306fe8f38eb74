"""FieldTrip realtime buffer: protocol, asyncio client, blocking writer, server and live source.

MEG and EEG acquisition software (Neuromag/MEGIN ``neuromag2ft``, CTF ``acq2ftx``, many EEG
amplifiers) writes into a FieldTrip buffer, a TCP service (port 1972) that analysis programs
read from.

- :mod:`.protocol`, :mod:`.header`, :mod:`.events`, :mod:`.operations`: the message layer,
  without I/O.
- :class:`FieldTripClient` (:mod:`.client`): asyncio client for every command, reconnecting
  by itself.
- :class:`FieldTripWriter` (:mod:`.writer`): blocking writer of a stream, its samples and
  markers (``neurocast replay --to fieldtrip``, benchmarks).
- :class:`FieldTripServer` (:mod:`.server`): asyncio server faithful to the reference
  implementation, for tests, the demo and replay.
- :class:`FieldTripSource` (:mod:`.source`): the buffer as a live source.
- :mod:`.metadata`: stream metadata in a header, markers as events.
"""

from neurocast.streaming.sources.fieldtrip.client import FieldTripClient
from neurocast.streaming.sources.fieldtrip.events import Event
from neurocast.streaming.sources.fieldtrip.header import Header, HeaderChunk
from neurocast.streaming.sources.fieldtrip.metadata import (
    event_to_marker,
    guess_channel_type,
    header_from_stream_info,
    is_neuromag,
    marker_to_event,
    stream_info_from_header,
)
from neurocast.streaming.sources.fieldtrip.protocol import (
    DEFAULT_PORT,
    ChunkType,
    Command,
    DataType,
    FieldTripConnectionError,
    FieldTripError,
    FieldTripProtocolError,
    FieldTripRequestError,
)
from neurocast.streaming.sources.fieldtrip.server import FieldTripServer
from neurocast.streaming.sources.fieldtrip.source import FieldTripSource
from neurocast.streaming.sources.fieldtrip.writer import FieldTripWriter

__all__ = [
    "DEFAULT_PORT",
    "ChunkType",
    "Command",
    "DataType",
    "Event",
    "FieldTripClient",
    "FieldTripConnectionError",
    "FieldTripError",
    "FieldTripProtocolError",
    "FieldTripRequestError",
    "FieldTripServer",
    "FieldTripSource",
    "FieldTripWriter",
    "Header",
    "HeaderChunk",
    "event_to_marker",
    "guess_channel_type",
    "header_from_stream_info",
    "is_neuromag",
    "marker_to_event",
    "stream_info_from_header",
]
