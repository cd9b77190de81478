"""Evaluation metrics."""

from zoo.metrics.captioning import CaptionMetrics
from zoo.metrics.embedding import (
    CrossModalRetrieval,
    GeodesicError,
    KNNAccuracy,
    LocationRetrievalError,
    retrieve_locations,
    zero_shot_logits,
)
from zoo.metrics.hallucination import CHAIR, POPE, ObjectVocabulary, parse_yes_no, pope_probes
from zoo.metrics.segmentation import ReferringIoU
from zoo.metrics.vqa import VQAAccuracy, normalize_answer

__all__ = [
    "CrossModalRetrieval",
    "GeodesicError",
    "KNNAccuracy",
    "LocationRetrievalError",
    "retrieve_locations",
    "zero_shot_logits",
    "CaptionMetrics",
    "ReferringIoU",
    "VQAAccuracy",
    "normalize_answer",
    "CHAIR",
    "POPE",
    "ObjectVocabulary",
    "parse_yes_no",
    "pope_probes",
]
