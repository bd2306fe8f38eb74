"""Sources of samples: the simulator, LSL inlets, FieldTrip buffers and file replay.

Every source follows :class:`Source` (:mod:`.base`); :func:`open_source` (:mod:`.open`) builds
the one a spec (:mod:`.specs`) describes.
"""

from neurocast.streaming.sources.base import (
    SIMULATED_TAG,
    Chunk,
    Marker,
    Source,
    SourceError,
    SourceStatus,
    StreamInfo,
    local_clock,
)
from neurocast.streaming.sources.fieldtrip import (
    FieldTripClient,
    FieldTripError,
    FieldTripServer,
    FieldTripSource,
    FieldTripWriter,
)
from neurocast.streaming.sources.lsl import LSLSource, use_loopback_config
from neurocast.streaming.sources.open import open_source
from neurocast.streaming.sources.replay import (
    FieldTripPlayer,
    LSLPlayer,
    ReplaySource,
    open_recording,
    recording_events,
)
from neurocast.streaming.sources.simulator import (
    SimulatedEpochs,
    Simulator,
    SimulatorSource,
    default_image_set,
    load_image_set,
)
from neurocast.streaming.sources.specs import (
    FieldTripSpec,
    LSLSpec,
    LSLStreamSelector,
    ReplaySpec,
    SimulatorSpec,
    SourceSpec,
)

__all__ = [
    "SIMULATED_TAG",
    "Chunk",
    "FieldTripClient",
    "FieldTripError",
    "FieldTripPlayer",
    "FieldTripServer",
    "FieldTripSource",
    "FieldTripSpec",
    "FieldTripWriter",
    "LSLPlayer",
    "LSLSource",
    "LSLSpec",
    "LSLStreamSelector",
    "Marker",
    "ReplaySource",
    "ReplaySpec",
    "SimulatedEpochs",
    "Simulator",
    "SimulatorSource",
    "SimulatorSpec",
    "Source",
    "SourceError",
    "SourceSpec",
    "SourceStatus",
    "StreamInfo",
    "default_image_set",
    "load_image_set",
    "local_clock",
    "open_recording",
    "open_source",
    "recording_events",
    "use_loopback_config",
]
