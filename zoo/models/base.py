"""What every zoo task shares: the optimiser, the schedule and the parameter report."""

from __future__ import annotations

import math

import torch
from lightning import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

__all__ = ["ZooTask", "warmup_cosine"]


def warmup_cosine(step: int, total: int, warmup: int, final: float = 0.0) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine to ``final``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


class ZooTask(LightningModule):
    """AdamW with decoupled weight decay and a warm-up + cosine schedule, for every model.

    Subclasses call ``super().__init__(lr=..., ...)`` with their own typed arguments so
    LightningCLI validates a YAML against them.
    """

    #: Parameters whose names contain one of these get no weight decay.
    no_decay_keys = ("bias", "norm", "logit_scale", "token", "pos_embed", "embeddings")

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_fraction: float = 0.05,
    ) -> None:
        super().__init__()
        self.lr = lr
        self.weight_decay = weight_decay
        self.betas = tuple(betas)
        self.warmup_fraction = warmup_fraction

    def parameter_groups(self) -> list[dict]:
        """Trainable parameters split into decayed and not-decayed groups."""
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            skip = param.ndim < 2 or any(key in name for key in self.no_decay_keys)
            (no_decay if skip else decay).append(param)
        return [
            {"params": decay, "weight_decay": self.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def configure_optimizers(self) -> dict:
        params = [p for p in self.parameters() if p.requires_grad]
        fused = bool(params) and all(p.is_cuda for p in params)  # fused kernels need CUDA
        optimizer = torch.optim.AdamW(
            self.parameter_groups(), lr=self.lr, betas=self.betas, fused=fused or None
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, round(self.warmup_fraction * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, warmup)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_start(self) -> None:
        rank_zero_info(parameter_report(self))


def parameter_report(module: nn.Module) -> str:
    """Trainable and frozen parameter counts per top-level child."""
    lines = []
    total_trainable = total = 0
    for name, child in module.named_children():
        n = sum(p.numel() for p in child.parameters())
        t = sum(p.numel() for p in child.parameters() if p.requires_grad)
        if n:
            lines.append(f"  {name:<24} {t:>12,} trainable / {n:>12,}")
    total = sum(p.numel() for p in module.parameters())
    total_trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    head = f"{type(module).__name__}: {total_trainable:,} trainable of {total:,} parameters"
    return "\n".join([head, *lines])
