"""Symmetric contrastive (InfoNCE) loss over the global batch, as CLIP and FLAVA train."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor
from torch.nn import functional as F

__all__ = ["MAX_LOGIT_SCALE", "contrastive_loss", "gather_with_grad", "init_logit_scale"]

#: CLIP clamps the learnable log temperature at ln(100).
MAX_LOGIT_SCALE = math.log(100.0)


def init_logit_scale(temperature: float = 0.07) -> torch.nn.Parameter:
    """A learnable log logit scale, initialised at ln(1 / temperature) as in CLIP."""
    return torch.nn.Parameter(torch.tensor(math.log(1.0 / temperature)))


def gather_with_grad(features: Tensor) -> Tensor:
    """Concatenate ``features`` from every rank, keeping the autograd graph to each of them.

    Under DDP every rank then computes the loss of the whole global batch; the backward of
    ``all_gather`` sums the gradients of all ranks' copies into the owner's features, and
    DDP's averaging turns the sum back into the gradient of one global loss.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features
    return torch.cat(dist_fn.all_gather(features.contiguous()), dim=0)


def contrastive_loss(
    a: Tensor, b: Tensor, logit_scale: Tensor, gather: bool = True
) -> Tensor:
    """Mean of the a->b and b->a cross-entropies over cosine similarities of paired rows.

    Args:
        a: ``B×D`` embeddings (normalized here).
        b: ``B×D`` embeddings paired row by row with ``a``.
        logit_scale: the log of the inverse temperature, clamped at ln(100).
        gather: use the features of all ranks as negatives (the global batch).
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    if gather:
        a, b = gather_with_grad(a), gather_with_grad(b)
    logits = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp() * a @ b.T
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
