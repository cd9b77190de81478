"""Referring segmentation metrics: mean (per-target) IoU and cumulative IoU.

``mIoU`` averages the IoU of each referred object (an object whose prediction and target are
both empty scores 1); ``cIoU`` (overall IoU) divides the total intersection by the total union
over the dataset, so large objects weigh more. All states are sums (``dist_reduce_fx="sum"``),
which makes both exact under DDP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["ReferringIoU"]


class ReferringIoU(Metric):
    """mIoU and cIoU of predicted against target masks, one pair per referred object.

    ``update(pred_masks, target_masks, valid=None)`` takes masks of shape ``(..., H, W)``
    (e.g. ``T×H×W`` or ``B×K×H×W``): predictions are bool masks or logits (foreground where
    ``> 0``), targets are bool or {0, 1} masks (foreground where ``> 0.5``). ``valid`` (bool,
    the leading shape ``...``) keeps only the real targets of a padded batch.

    ``compute()`` returns ``{"mIoU", "cIoU"}``; both are NaN before any target was seen, and
    ``cIoU`` is 1 when every union so far was empty.

    Args:
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    iou_sum: Tensor
    count: Tensor
    intersection: Tensor
    union: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("iou_sum", "count", "intersection", "union"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred_masks: Tensor, target_masks: Tensor, valid: Tensor | None = None) -> None:
        """Accumulate the intersections and unions of each (prediction, target) pair.

        Args:
            pred_masks: Predicted masks ``(..., H, W)``: bool, or logits (foreground ``> 0``).
            target_masks: Target masks of the same shape: bool, or {0, 1} (foreground
                ``> 0.5``).
            valid: Bool, the leading shape ``...``: the real targets of a padded batch.

        Raises:
            ValueError: If the shapes differ or the masks are not at least 2-D.
        """
        if pred_masks.shape != target_masks.shape or pred_masks.dim() < 2:
            raise ValueError(
                "pred_masks and target_masks must have the same shape (..., H, W), got "
                f"{tuple(pred_masks.shape)} and {tuple(target_masks.shape)}"
            )
        pred = pred_masks if pred_masks.dtype == torch.bool else pred_masks > 0
        target = target_masks if target_masks.dtype == torch.bool else target_masks > 0.5
        pixels = pred.shape[-2] * pred.shape[-1]
        pred, target = pred.reshape(-1, pixels), target.reshape(-1, pixels)
        if valid is not None:
            keep = valid.reshape(-1).to(torch.bool)
            pred, target = pred[keep], target[keep]
        inter = (pred & target).sum(-1, dtype=torch.float64)
        union = (pred | target).sum(-1, dtype=torch.float64)
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
        self.iou_sum += iou.sum()
        self.count += len(iou)
        self.intersection += inter.sum()
        self.union += union.sum()

    def compute(self) -> dict[str, Tensor]:
        """The IoUs of every pair seen so far.

        Returns:
            ``mIoU``: mean per-target IoU; ``cIoU``: total intersection over total union (both
            NaN before any target).
        """
        nan = torch.full_like(self.count, float("nan"))
        miou = torch.where(self.count > 0, self.iou_sum / self.count.clamp_min(1), nan)
        ciou = torch.where(self.union > 0, self.intersection / self.union.clamp_min(1), 1.0)
        ciou = torch.where(self.count > 0, ciou, nan)
        return {"mIoU": miou.float(), "cIoU": ciou.float()}
