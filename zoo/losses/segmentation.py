"""Mask losses of referring segmentation (LISA): per-target BCE and Dice on logits."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F

__all__ = ["mask_losses"]


def mask_losses(
    logits: Tensor, targets: Tensor, bce_weight: float = 2.0, dice_weight: float = 0.5
) -> dict[str, Tensor]:
    """Binary cross-entropy and Dice losses of ``T`` predicted masks, weighted as in LISA.

    Args:
        logits: ``T×H×W`` mask logits (only the valid targets).
        targets: ``T×H×W`` masks in {0, 1}.
        bce_weight: weight of the BCE term (LISA: 2.0).
        dice_weight: weight of the Dice term (LISA: 0.5).

    Returns:
        ``bce``: BCE with logits averaged over the pixels of each target, then over targets;
        ``dice``: ``1 - (2·Σpt + 1) / (Σp + Σt + 1)`` with ``p = sigmoid(logits)``, per target,
        averaged over targets; ``loss = bce_weight·bce + dice_weight·dice``. With ``T = 0``
        all three are zeros that keep the graph (so every rank runs the same backward).
    """
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must have the same shape, got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    logits = logits.float().flatten(1)
    targets = targets.to(logits).flatten(1)
    if len(logits) == 0:
        zero = logits.sum() * 0.0
        return {"bce": zero, "dice": zero, "loss": zero}
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).mean()
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(1) + 1
    denominator = probs.sum(1) + targets.sum(1) + 1
    dice = (1 - numerator / denominator).mean()
    return {"bce": bce, "dice": dice, "loss": bce_weight * bce + dice_weight * dice}
