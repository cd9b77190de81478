"""The papers' evaluation protocols: frozen-feature probes, multi-caption retrieval and UPerNet
segmentation over a zoo image encoder."""

from zoo.evaluation.probes import (
    fit_logistic_regression,
    knn_accuracy,
    linear_probe,
    stratified_split,
    zero_shot_accuracy,
)
from zoo.evaluation.retrieval import caption_retrieval, caption_retrieval_ranks
from zoo.evaluation.segmentation import (
    SimpleFeaturePyramid,
    UPerNetSegmentation,
    load_encoder_checkpoint,
    read_state_dict,
)

__all__ = [
    "SimpleFeaturePyramid",
    "UPerNetSegmentation",
    "caption_retrieval",
    "caption_retrieval_ranks",
    "fit_logistic_regression",
    "knn_accuracy",
    "linear_probe",
    "load_encoder_checkpoint",
    "read_state_dict",
    "stratified_split",
    "zero_shot_accuracy",
]
