"""Image-text matching negatives: hard ones by contrastive similarity (ALBEF) or random ones,
and FLAVA's pairs (each caption kept, or replaced by a negative with some probability)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "mix_negative_pairs",
    "sample_hard_negatives",
    "sample_negatives",
    "sample_random_negatives",
]


def _draw(weights: Tensor, generator: torch.Generator | None) -> Tensor:
    """One column per row with probability ∝ ``weights`` (Gumbel-max: the distribution of
    ``torch.multinomial(weights, 1)`` without its host-side check of the weights)."""
    uniform = torch.rand(weights.shape, device=weights.device, generator=generator)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
    return (weights.log() + gumbel).argmax(dim=1)


def _valid_columns(same: Tensor) -> Tensor:
    """``B×B`` float, 1 where the column may be a negative of the row: not the row itself and not
    ``same``; a row with none left falls back to every other column."""
    b = same.shape[0]
    if b < 2:
        raise ValueError("image-text matching needs at least 2 samples per batch for negatives")
    eye = torch.eye(b, dtype=torch.bool, device=same.device)
    valid = ~(same | eye)
    return torch.where(valid.any(dim=1, keepdim=True), valid, ~eye).float()


def sample_hard_negatives(
    similarity: Tensor,
    same: Tensor,
    scale: Tensor | float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """For each row, draw one column with probability ∝ ``softmax(scale · similarity)`` over the
    columns that are not ``same`` (the positive and exact duplicates of it, which would be false
    negatives). A row with no valid column falls back to any other column.

    ``scale`` is the contrastive logit scale ``exp(logit_scale)`` (ALBEF's rule): cosine
    similarities lie in [-1, 1], and their plain softmax over a batch of 128 is nearly uniform,
    so without it the "hard" negatives are random ones.

    Args:
        similarity: ``B×B`` image-text cosine similarities (no gradient needed).
        same: ``B×B`` bool, True where the column is not a valid negative for the row.
        scale: multiplies the similarities before the softmax (the inverse temperature).
        generator: the random source (tests).
    """
    valid = _valid_columns(same)
    logits = similarity.float() * scale
    weights = (logits - logits.amax(dim=1, keepdim=True)).exp() * valid
    # A row whose valid columns all underflow to 0 draws uniformly among them.
    weights = torch.where(weights.sum(dim=1, keepdim=True) > 0, weights, valid)
    return _draw(weights, generator)


def sample_random_negatives(same: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """For each row, one column drawn uniformly among those that are not ``same`` (nor the row
    itself; a row with none left falls back to any other column)."""
    return _draw(_valid_columns(same), generator)


def sample_negatives(
    same: Tensor,
    similarity: Tensor | None = None,
    scale: Tensor | float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """(a negative column per row, a negative row per column), long ``B`` each, never ``same``:
    hard ones by ``similarity`` (:func:`sample_hard_negatives`), uniform ones without it."""
    if similarity is None:
        return sample_random_negatives(same, generator), sample_random_negatives(same.T, generator)
    return (
        sample_hard_negatives(similarity, same, scale, generator),
        sample_hard_negatives(similarity.T, same.T, scale, generator),
    )


def mix_negative_pairs(
    negatives: Tensor, probability: float = 0.5, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """FLAVA's matching pairs: each image keeps its caption, or with ``probability`` gets the
    caption ``negatives[row]`` (long ``B``, drawn by one of the samplers above).

    Returns:
        ``text_index`` (long ``B``: the caption paired with each image) and ``target`` (long
        ``B``: 1 for a true pair, 0 for a negative).
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"itm_negative_probability must be in [0, 1], got {probability}")
    b = negatives.shape[0]
    flip = torch.rand(b, device=negatives.device, generator=generator) < probability
    rows = torch.arange(b, device=negatives.device)
    return torch.where(flip, negatives, rows), (~flip).long()
