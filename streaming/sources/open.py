"""From a source spec to the source it describes."""

from __future__ import annotations

from neurocast.streaming.sources.base import Source
from neurocast.streaming.sources.fieldtrip.source import FieldTripSource
from neurocast.streaming.sources.lsl.source import LSLSource
from neurocast.streaming.sources.replay import ReplaySource
from neurocast.streaming.sources.simulator.source import SimulatorSource
from neurocast.streaming.sources.specs import (
    FieldTripSpec,
    LSLSpec,
    ReplaySpec,
    SimulatorSpec,
    SourceSpec,
)


def open_source(spec: SourceSpec) -> Source:
    """Build the (unopened) source a spec describes.

    Parameters
    ----------
    spec : SimulatorSpec | LSLSpec | FieldTripSpec | ReplaySpec
        What to read and how.

    Returns
    -------
    source : Source
        The source, still to be opened with ``open()``.
    """
    if isinstance(spec, SimulatorSpec):
        return SimulatorSource(spec)
    if isinstance(spec, LSLSpec):
        return LSLSource(spec)
    if isinstance(spec, FieldTripSpec):
        return FieldTripSource(spec)
    if isinstance(spec, ReplaySpec):
        return ReplaySource(spec)
    raise TypeError(f"No source reads a {type(spec).__name__}.")
