"""Callbacks: sample logging and prediction writers."""

from zoo.callbacks.masks import MaskPredictionWriter
from zoo.callbacks.samples import RetrievalSamples

__all__ = ["MaskPredictionWriter", "RetrievalSamples"]
