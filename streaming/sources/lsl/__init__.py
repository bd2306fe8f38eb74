"""Lab Streaming Layer inlets as a neurocast source.

:class:`LSLSource` (:mod:`.source`) resolves an LSL outlet by name, type or source id
(:mod:`.resolve`), describes it as an MNE ``Info`` from the channel labels, types, units and
locations in the outlet's XML description (:mod:`.channels`) and pulls its samples in chunks
(:mod:`.inlet`). One source can also merge several outlets of the same sampling rate (e.g.
MEG and EEG from two devices) into one stream on a common LSL timeline, and attach the events
of an LSL marker stream. :mod:`.config` keeps LSL discovery on this machine.
"""

from neurocast.streaming.sources.lsl.channels import (
    ChannelDesc,
    build_info,
    describe_channels,
    lsl_stream_info,
)
from neurocast.streaming.sources.lsl.config import use_loopback_config, write_loopback_config
from neurocast.streaming.sources.lsl.resolve import resolve_stream
from neurocast.streaming.sources.lsl.source import LSLSource

__all__ = [
    "ChannelDesc",
    "LSLSource",
    "build_info",
    "describe_channels",
    "lsl_stream_info",
    "resolve_stream",
    "use_loopback_config",
    "write_loopback_config",
]
