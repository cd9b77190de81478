"""Masked image modelling (BEiT's block masks; pixel or codebook targets) and masked language
modelling (BERT's 15 %)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "block_patch_mask",
    "mask_text_tokens",
    "masked_pixel_loss",
    "masked_token_loss",
    "patchify",
    "pixel_targets",
    "random_patch_mask",
    "token_loss",
]


def block_patch_mask(
    batch: int,
    grid_size: tuple[int, int],
    ratio: float = 0.4,
    min_block: int = 16,
    min_aspect: float = 0.3,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    attempts: int | None = None,
) -> Tensor:
    """BEiT's block-wise masking (FLAVA's ``FlavaMaskingGenerator``): ``batch×(h·w)`` bool.

    Rectangles of at least ``min_block`` patches (fewer on grids too small for one) and aspect
    ratio in ``[min_aspect, 1/min_aspect]`` (log-uniform) are proposed at random positions; one
    is kept when it adds between 1 and the remaining budget of new patches, until
    ``round(ratio·h·w)`` are masked. Overlaps count once, so a row holds at most that many and
    usually exactly that many. FLAVA masks 75 of 14×14 patches (``ratio`` 0.38); BEiT ~40 %.

    BEiT places one rectangle after another on the host; here every row of the batch gets one
    proposal per step, on the device, for a fixed number of steps (``attempts``, default
    ``4·⌈total / min_block⌉ + 10``), so nothing is copied between host and device.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    if not 0.0 < min_aspect <= 1.0:
        raise ValueError(f"min_aspect must be in (0, 1], got {min_aspect}")
    h, w = grid_size
    total = max(1, round(ratio * h * w))
    smallest = min(min_block, total)
    steps = attempts if attempts is not None else 4 * math.ceil(total / smallest) + 10
    log_lo, log_hi = math.log(min_aspect), -math.log(min_aspect)
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    mask = torch.zeros(batch, h, w, dtype=torch.bool, device=device)
    remaining = torch.full((batch,), float(total), device=device)

    def uniform() -> Tensor:
        return torch.rand(batch, device=device, generator=generator)

    for _ in range(steps):
        area = smallest + uniform() * (remaining - smallest)
        aspect = torch.exp(log_lo + uniform() * (log_hi - log_lo))
        bh = torch.sqrt(area * aspect).round()
        bw = torch.sqrt(area / aspect).round()
        fits = (bh > 0) & (bh < h) & (bw > 0) & (bw < w)
        top = (uniform() * (h - bh + 1)).floor().clamp(min=0)
        left = (uniform() * (w - bw + 1)).floor().clamp(min=0)
        rect = (
            (rows >= top.view(-1, 1, 1))
            & (rows < (top + bh).view(-1, 1, 1))
            & (cols >= left.view(-1, 1, 1))
            & (cols < (left + bw).view(-1, 1, 1))
        )
        new = (rect & ~mask).sum(dim=(1, 2)).float()
        keep = fits & (new > 0) & (new <= remaining)
        mask = mask | (rect & keep.view(-1, 1, 1))
        remaining = remaining - new * keep
    return mask.flatten(1)


def token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of ``B×T×V`` logits over the labels that are not -100 (long ``B×T``),
    0 when there are none (a batch whose counted rows drew no masked token).

    Every position goes through the head and the unpicked are ignored: selecting the picked
    ones would give a shape only the device knows (a host synchronization every step).
    """
    flat = labels.flatten()
    total = F.cross_entropy(logits.flatten(0, 1).float(), flat, ignore_index=-100, reduction="sum")
    return total / (flat != -100).sum().clamp(min=1)


def masked_token_loss(logits: Tensor, codes: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy of the predicted codebook tokens on the masked patches (BEiT / FLAVA MIM).

    Args:
        logits: ``B×N×V`` predictions per patch over the codebook's ``V`` codes.
        codes: long ``B×N``: the codebook's token of each patch of the unmasked image.
        mask: ``B×N`` bool: the patches counted (masked, and for MMM on positive pairs only).

    The mean over the counted patches of the batch, as ``FlavaForPreTraining`` computes it
    (:func:`token_loss`).
    """
    return token_loss(logits, torch.where(mask, codes, torch.full_like(codes, -100)))


def random_patch_mask(
    batch: int,
    num_patches: int,
    ratio: float,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """``batch×num_patches`` bool mask with exactly ``round(ratio·num_patches)`` True per row."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    count = max(1, round(ratio * num_patches))
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < count


def patchify(image: Tensor, patch_size: tuple[int, int]) -> Tensor:
    """``B×C×H×W`` -> ``B×N×(ph·pw·C)`` patches in row-major order (as ViT tokens)."""
    b, c, h, w = image.shape
    ph, pw = patch_size
    x = image.reshape(b, c, h // ph, ph, w // pw, pw)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // ph) * (w // pw), ph * pw * c)


def pixel_targets(image: Tensor, patch_size: tuple[int, int], normalize: bool = True) -> Tensor:
    """The MAE / SimMIM pixel target ``B×N×(ph·pw·C)`` of ``B×C×H×W`` images: each patch,
    normalized by its own mean and variance when ``normalize`` (MAE's normalized pixels)."""
    target = patchify(image, patch_size)
    if normalize:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    return target


def masked_pixel_loss(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error on the masked patches only (MAE / SimMIM).

    Args:
        prediction: ``B×N×P`` predicted pixels per patch.
        target: ``B×N×P`` their targets (:func:`pixel_targets`).
        mask: ``B×N`` bool, True where the patch counts (masked; for MMM on positive pairs only).
    """
    error = (prediction.float() - target.float()).pow(2).mean(dim=-1)
    return (error * mask).sum() / mask.sum().clamp(min=1)


def mask_text_tokens(
    input_ids: Tensor,
    special: Tensor,
    mask_token_id: int,
    vocab_size: int,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking: pick ``probability`` of the non-special tokens; of those 80 % become
    [MASK], 10 % a random token, 10 % stay. Returns (masked ids, labels with -100 elsewhere).

    ``special`` is a bool ``B×T`` tensor of positions never masked ([CLS], [SEP], padding).
    At least one token per batch is picked so the loss is always defined: when the draw picks
    none, the first non-special token (decided on the device, no host synchronization).
    """
    rand = torch.rand(input_ids.shape, device=input_ids.device, generator=generator)
    picked = (rand < probability) & ~special
    allowed = (~special).flatten()
    first = torch.zeros_like(allowed).scatter(0, allowed.int().argmax().view(1), True)
    picked = picked | (first & allowed & ~picked.any()).view_as(picked)
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, device=input_ids.device, generator=generator)
    random_ids = torch.randint(
        vocab_size, input_ids.shape, device=input_ids.device, generator=generator
    )
    masked = torch.where(
        picked & (action < 0.8), torch.full_like(input_ids, mask_token_id), input_ids
    )
    masked = torch.where(picked & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, labels
