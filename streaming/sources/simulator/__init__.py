"""The embedded physics-based MEG/EEG simulator: the default source when no device is connected.

- :mod:`.geometry`: sensor arrays, spherical head model and cached forward solutions.
- :mod:`.physics`: the subject's dipoles, the classes of ongoing rhythms, the image-evoked
  components, sensor noise and the renderer that turns them into sensor signals.
- :mod:`.images`: the image sets whose embeddings drive the evoked responses.
- :class:`Simulator` (:mod:`.simulator`): a seeded stream of class blocks and image trials,
  recordings (:meth:`Simulator.simulate_raw`) and training epochs
  (:class:`SimulatedEpochs`, :mod:`.epochs`).
- :class:`SimulatorSource` (:mod:`.source`): the simulator as a live source.
"""

from neurocast.streaming.sources.simulator.epochs import SimulatedEpochs
from neurocast.streaming.sources.simulator.geometry import (
    default_info,
    forward_gain,
    load_info,
    template_montage,
)
from neurocast.streaming.sources.simulator.images import default_image_set, load_image_set
from neurocast.streaming.sources.simulator.physics import (
    CLASSES,
    EVOKED_COMPONENTS,
    IMAGE_SITES,
    RHYTHMS,
    SENSOR_NOISE_DENSITY,
    ActivityClass,
    EvokedComponent,
    Rhythm,
)
from neurocast.streaming.sources.simulator.simulator import Simulator
from neurocast.streaming.sources.simulator.source import SimulatorSource

__all__ = [
    "CLASSES",
    "EVOKED_COMPONENTS",
    "IMAGE_SITES",
    "RHYTHMS",
    "SENSOR_NOISE_DENSITY",
    "ActivityClass",
    "EvokedComponent",
    "Rhythm",
    "SimulatedEpochs",
    "Simulator",
    "SimulatorSource",
    "default_image_set",
    "default_info",
    "forward_gain",
    "load_image_set",
    "load_info",
    "template_montage",
]
