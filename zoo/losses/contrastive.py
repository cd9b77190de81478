"""Symmetric contrastive (InfoNCE) loss over the global batch, as CLIP and FLAVA train.

Under DDP each rank scores only its own rows against the columns of every rank (open_clip's
``local_loss``): a ``B_local×B_global`` logit matrix per direction instead of the full
``B_global×B_global`` one, with the rank's rows labelled by their offset in the global batch.
The features of the other ranks are gathered with their autograd graph, so the gradients are
those of the one global loss once DDP averages them.
"""

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
    """A learnable log logit scale, initialized at ln(1 / temperature) as in CLIP."""
    return torch.nn.Parameter(torch.tensor(math.log(1.0 / temperature)))


def _world() -> tuple[int, int]:
    """(rank, world size) of the initialized process group, or (0, 1) without one."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather_with_grad(features: Tensor) -> Tensor:
    """Concatenate ``features`` from every rank, keeping the autograd graph to each of them.

    The backward of ``all_gather`` sums the gradients that every rank's loss sends to a
    feature into the rank that owns it; DDP's averaging then makes it the gradient of the
    global loss.
    """
    if _world()[1] == 1:
        return features
    return torch.cat(dist_fn.all_gather(features.contiguous()), dim=0)


def contrastive_loss(a: Tensor, b: Tensor, logit_scale: Tensor, gather: bool = True) -> Tensor:
    """Mean of the a->b and b->a cross-entropies over cosine similarities of paired rows.

    With ``gather`` under DDP the loss is this rank's share of the global-batch loss: its
    ``B×D`` rows against the gathered ``(W·B)×D`` columns, labels offset by ``rank·B`` (all
    ranks hold ``B`` rows, as DDP's samplers give them). The mean over the ranks is the
    single-process loss of the global batch and so are the averaged gradients.

    Args:
        a: ``B×D`` embeddings (normalized here).
        b: ``B×D`` embeddings paired row by row with ``a``.
        logit_scale: the log of the inverse temperature, clamped at ln(100).
        gather: use the features of all ranks as negatives (the global batch).
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    rank, world = _world() if gather else (0, 1)
    all_a, all_b = (gather_with_grad(a), gather_with_grad(b)) if world > 1 else (a, b)
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    target = torch.arange(len(a), device=a.device) + rank * len(a)
    a_to_b = scale * a @ all_b.T
    b_to_a = scale * b @ all_a.T
    return (F.cross_entropy(a_to_b, target) + F.cross_entropy(b_to_a, target)) / 2
