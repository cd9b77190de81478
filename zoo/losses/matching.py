"""Image-text matching with hard negatives drawn by contrastive similarity (ALBEF, FLAVA)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sample_hard_negatives"]


def sample_hard_negatives(
    similarity: Tensor, same: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """For each row, draw one column with probability ∝ softmax(similarity) over the columns
    that are not ``same`` (the positive and exact duplicates of it, which would be false
    negatives). A row with no valid column falls back to any other column.

    The draw is the Gumbel-max trick (``argmax(log w + Gumbel noise)``, the same distribution as
    ``torch.multinomial(w, 1)``): no host synchronisation, where ``multinomial`` copies a check
    of the weights to the host.

    Args:
        similarity: ``B×B`` image-text similarity logits (no gradient needed).
        same: ``B×B`` bool, True where the column is not a valid negative for the row.
    """
    b = similarity.shape[0]
    if b < 2:
        raise ValueError("image-text matching needs at least 2 samples per batch for negatives")
    eye = torch.eye(b, dtype=torch.bool, device=similarity.device)
    weights = similarity.float().softmax(dim=1).masked_fill(same | eye, 0.0)
    empty = weights.sum(dim=1, keepdim=True) <= 0
    weights = torch.where(empty, (~eye).float(), weights)
    uniform = torch.rand(weights.shape, device=weights.device, generator=generator)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
    return (weights.log() + gumbel).argmax(dim=1)
