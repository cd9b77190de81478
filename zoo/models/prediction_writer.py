"""Moved: the generators' prediction writer is :mod:`zoo.callbacks.prediction_writer`.

Kept so that ``zoo.models.prediction_writer`` (and ``zoo.models.PredictionWriter`` in users'
YAMLs) still import.
"""

from zoo.callbacks.prediction_writer import OneFileWriter, PredictionWriter

__all__ = ["OneFileWriter", "PredictionWriter"]
