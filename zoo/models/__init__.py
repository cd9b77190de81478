"""The zoo's LightningModules, one file per model family."""

from zoo.models.aquila import Aquila
from zoo.models.base import OptimizerConfig, ZooTask
from zoo.models.flavars import FLAVARS
from zoo.models.fuse import FUSE
from zoo.models.generator import (
    GenerationConfig,
    PredictionWriter,
    TrainingStage,
    VisionLanguageGenerator,
)
from zoo.models.geopix import GeoPix

__all__ = [
    "FLAVARS",
    "FUSE",
    "Aquila",
    "GenerationConfig",
    "GeoPix",
    "OptimizerConfig",
    "PredictionWriter",
    "TrainingStage",
    "VisionLanguageGenerator",
    "ZooTask",
]
