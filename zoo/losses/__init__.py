"""Losses: contrastive (global batch), masked modelling, matching, segmentation."""

from zoo.losses.contrastive import contrastive_loss
from zoo.losses.segmentation import mask_losses

__all__ = ["contrastive_loss", "mask_losses"]
