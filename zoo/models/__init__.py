"""The zoo's LightningModules, one file per model family."""

from zoo.models.base import ZooTask
from zoo.models.flavars import FLAVARS

__all__ = ["FLAVARS", "ZooTask"]
