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
    "export_pipeline",
    "list_artifacts",
    "load_artifact",
    "read_metadata",
    "save_artifact",
]


def __getattr__(name: str) -> object:
    # export_pipeline needs scikit-learn and onnx tooling: imported on first use only, so that
    # importing this package stays free of training libraries
    if name == "export_pipeline":
        from neurocast.models.training.pipeline_export import export_pipeline

        return export_pipeline
    raise AttributeError(f"module 'neurocast.models' has no attribute {name!r}")
