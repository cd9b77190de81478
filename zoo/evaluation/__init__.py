"""The papers' evaluation protocols, their configs and the ``zoo evaluate`` command.

* :mod:`~zoo.evaluation.protocols`: the protocols as typed classes (:class:`KNN`,
  :class:`LinearProbe`, :class:`ZeroShot`, :class:`Retrieval`, :class:`Segmentation`, the
  model's own test loop: :class:`ModelTestLoop`, :class:`GenerationTestLoop`,
  :class:`ReferringTestLoop`, scene classification by generation:
  :class:`SceneClassificationByGeneration` from :mod:`~zoo.evaluation.generative`; object
  hallucination, CHAIR and POPE: :class:`Hallucination` from
  :mod:`~zoo.evaluation.hallucination`), on
  :mod:`~zoo.evaluation.base`'s :class:`Evaluation`.
* :mod:`~zoo.evaluation.config`: evaluation YAMLs and suites, checked by jsonargparse.
* :mod:`~zoo.evaluation.runner` and :mod:`~zoo.evaluation.results`: running a list of them
  and the results table beside the papers' numbers; :mod:`~zoo.evaluation.cli` the command,
  :mod:`~zoo.evaluation.compare` ``zoo compare`` (an ablation suite's variants side by side).
* :mod:`~zoo.evaluation.probes`, :mod:`~zoo.evaluation.retrieval`,
  :mod:`~zoo.evaluation.segmentation`: the protocols' computations (feature tensors in,
  numbers out; UPerNet over a zoo image encoder).
"""

from zoo.evaluation import protocols
from zoo.evaluation.base import CapabilityError, Context, Evaluation
from zoo.evaluation.config import EvaluationConfig, load_evaluations
from zoo.evaluation.hallucination import Hallucination
from zoo.evaluation.probes import (
    fit_logistic_regression,
    knn_accuracy,
    linear_probe,
    stratified_split,
    zero_shot_accuracy,
)
from zoo.evaluation.protocols import *  # noqa: F403 (the protocol classes, by their __all__)
from zoo.evaluation.results import markdown_table, write_results
from zoo.evaluation.retrieval import caption_retrieval, caption_retrieval_ranks
from zoo.evaluation.runner import evaluate
from zoo.evaluation.segmentation import (
    SimpleFeaturePyramid,
    UPerNetSegmentation,
    load_encoder_checkpoint,
)

__all__ = [
    *protocols.__all__,
    "CapabilityError",
    "Context",
    "Evaluation",
    "EvaluationConfig",
    "Hallucination",
    "SimpleFeaturePyramid",
    "UPerNetSegmentation",
    "caption_retrieval",
    "caption_retrieval_ranks",
    "evaluate",
    "fit_logistic_regression",
    "knn_accuracy",
    "linear_probe",
    "load_encoder_checkpoint",
    "load_evaluations",
    "markdown_table",
    "stratified_split",
    "write_results",
    "zero_shot_accuracy",
]
