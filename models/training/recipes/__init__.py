"""One recipe per model family: what the command line, the demo builder and benchmarks run."""

from neurocast.models.training.recipes.classifier import (
    ClassifierRecipe,
    LabelledRecording,
    TrainedClassifier,
    train_classifier,
)
from neurocast.models.training.recipes.retrieval import (
    RetrievalFit,
    fit_retrieval,
    prepare_windows,
    train_brain_module,
)
from neurocast.models.training.recipes.translator import (
    SubjectSplit,
    TrainedTranslator,
    train_translator,
)

__all__ = [
    "ClassifierRecipe",
    "LabelledRecording",
    "RetrievalFit",
    "SubjectSplit",
    "TrainedClassifier",
    "TrainedTranslator",
    "fit_retrieval",
    "prepare_windows",
    "train_brain_module",
    "train_classifier",
    "train_translator",
]
