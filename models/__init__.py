"""neurocast.models: model artifacts and their runtime.

Only the torch-free serving names are re-exported here, so that importing this package never
imports torch; the networks (:mod:`.nets`) and their training (:mod:`.training`) are imported
by name.
"""

from neurocast.models.serving import (
    Artifact,
    ArtifactError,
    ArtifactMetadata,
    Gallery,
    GalleryError,
    InputSpec,
    OnnxWindowModel,
    OutputSpec,
    Provenance,
    StreamMismatchError,
    list_artifacts,
    load_artifact,
    read_metadata,
    save_artifact,
)

__all__ = [
    "Artifact",
    "ArtifactError",
    "ArtifactMetadata",
    "Gallery",
    "GalleryError",
    "InputSpec",
    "OnnxWindowModel",
    "OutputSpec",
    "Provenance",
    "StreamMismatchError",
    "list_artifacts",
    "load_artifact",
    "read_metadata",
    "save_artifact",
]
