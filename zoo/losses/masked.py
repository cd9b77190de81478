"""Masked image modelling (pixel targets) and masked language modelling (BERT's 15 %)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mask_text_tokens", "masked_pixel_loss", "patchify", "random_patch_mask"]


def random_patch_mask(
    batch: int, num_patches: int, ratio: float, device: torch.device | str = "cpu",
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


def masked_pixel_loss(
    prediction: Tensor, image: Tensor, mask: Tensor, patch_size: tuple[int, int],
    normalize_target: bool = True,
) -> Tensor:
    """Mean squared error on the masked patches only (MAE/SimMIM pixel target).

    Args:
        prediction: ``B×N×(ph·pw·C)`` predicted pixels per patch.
        image: ``B×C×H×W`` the unmasked input.
        mask: ``B×N`` bool, True where the patch was masked.
        patch_size: pixels per patch.
        normalize_target: normalize each target patch by its own mean and variance (MAE).
    """
    target = patchify(image, patch_size)
    if normalize_target:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    error = (prediction.float() - target.float()).pow(2).mean(dim=-1)
    return (error * mask).sum() / mask.sum().clamp(min=1)


def mask_text_tokens(
    input_ids: Tensor, special: Tensor, mask_token_id: int, vocab_size: int,
    probability: float = 0.15, generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT's masking: pick ``probability`` of the non-special tokens; of those 80 % become
    [MASK], 10 % a random token, 10 % stay. Returns (masked ids, labels with -100 elsewhere).

    ``special`` is a bool ``B×T`` tensor of positions never masked ([CLS], [SEP], padding).
    At least one token per batch is picked so the loss is always defined: when the draw picks
    none, the first non-special token (decided on the device, no host synchronisation).
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
    masked = torch.where(picked & (action < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(picked & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, labels
