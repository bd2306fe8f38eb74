"""Serving models: artifacts, their metadata, ONNX Runtime sessions and image galleries.

Everything here runs without torch: the server and the decode engine import only this
package.
"""

from neurocast.models.serving.artifact import (
    Artifact,
    artifact_filename,
    load_artifact,
    save_artifact,
)
from neurocast.models.serving.gallery import (
    GALLERY_SUFFIX,
    Gallery,
    GalleryError,
    l2_normalize,
    make_thumbnail,
)
from neurocast.models.serving.listing import ArtifactListing, InvalidArtifact, list_artifacts
from neurocast.models.serving.onnx_file import content_hash, read_metadata
from neurocast.models.serving.runtime import (
    OnnxWindowModel,
    RuntimeSession,
    get_session,
    loaded_sessions,
    release_session,
)
from neurocast.models.serving.schema import (
    ARTIFACT_SUFFIX,
    METADATA_KEY,
    ArtifactError,
    ArtifactMetadata,
    InputSpec,
    Metrics,
    OutputSpec,
    Provenance,
    StreamMismatchError,
    Task,
)

__all__ = [
    "ARTIFACT_SUFFIX",
    "GALLERY_SUFFIX",
    "METADATA_KEY",
    "Artifact",
    "ArtifactError",
    "ArtifactListing",
    "ArtifactMetadata",
    "Gallery",
    "GalleryError",
    "InputSpec",
    "InvalidArtifact",
    "Metrics",
    "OnnxWindowModel",
    "OutputSpec",
    "Provenance",
    "RuntimeSession",
    "StreamMismatchError",
    "Task",
    "artifact_filename",
    "content_hash",
    "get_session",
    "l2_normalize",
    "list_artifacts",
    "load_artifact",
    "loaded_sessions",
    "make_thumbnail",
    "read_metadata",
    "release_session",
    "save_artifact",
]
