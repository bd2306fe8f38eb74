"""Training, export and recipes of every model family (torch).

The shared pieces: :mod:`.loop` (the early-stopping training loop), :mod:`.export` (the one
export path, checked against torch) and :mod:`.recipes` (one recipe per family).
"""

from neurocast.models.training.export import (
    ExportCheckError,
    check_onnx,
    export_artifact,
    export_onnx,
    git_commit,
)
from neurocast.models.training.loop import (
    LoopResult,
    TrainingLoop,
    set_seed,
    set_threads,
    torch_threads,
)

__all__ = [
    "ExportCheckError",
    "LoopResult",
    "TrainingLoop",
    "check_onnx",
    "export_artifact",
    "export_onnx",
    "git_commit",
    "set_seed",
    "set_threads",
    "torch_threads",
]
