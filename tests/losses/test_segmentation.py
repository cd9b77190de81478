"""Tests of the referring segmentation mask losses (``zoo.losses.segmentation``)."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.losses.segmentation import mask_losses


def reference(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """Per-target loop in plain Python arithmetic."""
    bces, dices = [], []
    for logit, target in zip(logits.tolist(), targets.tolist(), strict=True):
        x = [v for row in logit for v in row]
        t = [v for row in target for v in row]
        p = [1 / (1 + math.exp(-v)) for v in x]
        bce = [
            -(ti * math.log(pi) + (1 - ti) * math.log(1 - pi)) for pi, ti in zip(p, t, strict=True)
        ]
        bces.append(sum(bce) / len(bce))
        inter = sum(pi * ti for pi, ti in zip(p, t, strict=True))
        dices.append(1 - (2 * inter + 1) / (sum(p) + sum(t) + 1))
    return sum(bces) / len(bces), sum(dices) / len(dices)


def test_matches_loop():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=generator, dtype=torch.float64)
    targets = (torch.rand(3, 5, 7, generator=generator) > 0.6).double()
    targets[2] = 0  # an empty target
    bce, dice = reference(logits, targets)
    out = mask_losses(logits, targets)
    assert out["bce"].item() == pytest.approx(bce, rel=1e-5)
    assert out["dice"].item() == pytest.approx(dice, rel=1e-5)
    assert out["loss"].item() == pytest.approx(2.0 * bce + 0.5 * dice, rel=1e-5)
    weighted = mask_losses(logits, targets, bce_weight=1.0, dice_weight=3.0)
    assert weighted["loss"].item() == pytest.approx(bce + 3.0 * dice, rel=1e-5)


def test_gradients_and_empty():
    logits = torch.randn(2, 4, 4, requires_grad=True)
    mask_losses(logits, torch.ones(2, 4, 4))["loss"].backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    none = torch.zeros(0, 4, 4, requires_grad=True)
    out = mask_losses(none, torch.zeros(0, 4, 4))
    assert out["loss"].item() == 0.0 and out["loss"].requires_grad
    with pytest.raises(ValueError, match="same shape"):
        mask_losses(torch.zeros(1, 4, 4), torch.zeros(2, 4, 4))
