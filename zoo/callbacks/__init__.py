"""Callbacks: sample logging and prediction writers."""

from zoo.callbacks.embeddings import EmbeddingWriter
from zoo.callbacks.masks import MaskPredictionWriter
from zoo.callbacks.prediction_writer import OneFileWriter, PredictionWriter
from zoo.callbacks.samples import GenerationSamples, RetrievalSamples

__all__ = [
    "EmbeddingWriter",
    "GenerationSamples",
    "MaskPredictionWriter",
    "OneFileWriter",
    "PredictionWriter",
    "RetrievalSamples",
]
