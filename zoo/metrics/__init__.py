"""Evaluation metrics."""

from zoo.metrics.embedding import (
    CrossModalRetrieval,
    GeodesicError,
    KNNAccuracy,
    retrieve_locations,
    zero_shot_logits,
)

__all__ = [
    "CrossModalRetrieval",
    "GeodesicError",
    "KNNAccuracy",
    "retrieve_locations",
    "zero_shot_logits",
]
