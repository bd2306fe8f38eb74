"""The torch networks of every model family (training and export only; never served)."""

from neurocast.models.nets.backbones import BACKBONES, build_backbone
from neurocast.models.nets.brain_module import (
    BrainModule,
    BrainModuleConfig,
    CombinedLoss,
    RetrievalHead,
    small_config,
)
from neurocast.models.nets.classifier import (
    PCAMixing,
    ScalogramClassifier,
    ScalogramStandardizer,
    SensorMixing,
)
from neurocast.models.nets.translator import (
    EEGToMEGUNet,
    LinearTranslator,
    ScaledTranslator,
    TranslatorConfig,
)

__all__ = [
    "BACKBONES",
    "BrainModule",
    "BrainModuleConfig",
    "CombinedLoss",
    "EEGToMEGUNet",
    "LinearTranslator",
    "PCAMixing",
    "RetrievalHead",
    "ScaledTranslator",
    "ScalogramClassifier",
    "ScalogramStandardizer",
    "SensorMixing",
    "TranslatorConfig",
    "build_backbone",
    "small_config",
]
