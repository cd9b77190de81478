"""Callbacks: sample logging and prediction writers."""

from zoo.callbacks.masks import MaskPredictionWriter
from zoo.callbacks.samples import GenerationSamples, RetrievalSamples

__all__ = ["GenerationSamples", "MaskPredictionWriter", "RetrievalSamples"]
