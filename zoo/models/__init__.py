"""The zoo's LightningModules, one file per model family."""

from zoo.callbacks.prediction_writer import PredictionWriter
from zoo.models.aquila import Aquila, SFIConfig
from zoo.models.base import OptimizerConfig, ZooTask
from zoo.models.decoding import GenerationConfig
from zoo.models.flavars import FLAVARS
from zoo.models.fuse import FUSE, FuseInjection, FuseViews
from zoo.models.generator import SpeedConfig, VisionLanguageGenerator
from zoo.models.geopix import GeoPix, MaskDecoderConfig, MaskLossWeights, MemoryConfig, SegTokens
from zoo.models.stages import TrainingStage

__all__ = [
    "FLAVARS",
    "FUSE",
    "Aquila",
    "FuseInjection",
    "FuseViews",
    "GenerationConfig",
    "GeoPix",
    "MaskDecoderConfig",
    "MaskLossWeights",
    "MemoryConfig",
    "OptimizerConfig",
    "PredictionWriter",
    "SFIConfig",
    "SegTokens",
    "SpeedConfig",
    "TrainingStage",
    "VisionLanguageGenerator",
    "ZooTask",
]
