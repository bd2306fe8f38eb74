"""Online preprocessing: causal filters, resampling, robust scaling and Morlet scalograms."""

from neurocast.streaming.preprocessing.filters import (
    OnlinePreprocessor,
    PreprocessSpec,
    fit_robust_scaler,
    preprocess_array,
)
from neurocast.streaming.preprocessing.scalogram import (
    ScalogramPreprocessor,
    ScalogramSpec,
    StreamingMorlet,
    morlet_power,
)

__all__ = [
    "OnlinePreprocessor",
    "PreprocessSpec",
    "ScalogramPreprocessor",
    "ScalogramSpec",
    "StreamingMorlet",
    "fit_robust_scaler",
    "morlet_power",
    "preprocess_array",
]
