"""What every zoo task shares: the optimizer, the schedule and the parameter report."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

import torch
from lightning import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

__all__ = ["OptimizerConfig", "ZooTask", "warmup_cosine"]


def warmup_cosine(step: int, total: int, warmup: int, final: float = 0.0) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine to ``final``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW with decoupled weight decay and a linear warm-up + cosine schedule.

    In YAML: ``optimizer: {lr: 2.0e-5, weight_decay: 0.0, betas: [0.9, 0.999]}``; keys not
    given keep the model family's defaults.

    Attributes:
        lr: peak learning rate.
        weight_decay: AdamW weight decay (not applied to biases, norms and embeddings).
        betas: AdamW betas.
        warmup_fraction: fraction of the steps spent in linear warm-up before the cosine decay.
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optimizer.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optimizer.weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(
                f"optimizer.warmup_fraction must be in [0, 1), got {self.warmup_fraction}"
            )
        object.__setattr__(self, "betas", tuple(self.betas))


class ZooTask(LightningModule):
    """The optimizer and schedule of :class:`OptimizerConfig`, for every model.

    Subclasses take ``optimizer: OptimizerConfig = OptimizerConfig(<family defaults>)`` and
    pass it on, so LightningCLI validates ``optimizer:`` in a YAML against the dataclass.
    """

    #: Parameters whose names contain one of these get no weight decay.
    no_decay_keys = ("bias", "norm", "logit_scale", "token", "pos_embed", "embeddings")

    def __init__(self, optimizer: OptimizerConfig | dict | None = None) -> None:
        super().__init__()
        if isinstance(optimizer, dict):  # as stored in a checkpoint's hyper-parameters
            optimizer = OptimizerConfig(**optimizer)
        self.optimizer_config = optimizer or OptimizerConfig()

    def parameter_groups(self) -> list[dict]:
        """Trainable parameters split into decayed and not-decayed groups."""
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            skip = param.ndim < 2 or any(key in name for key in self.no_decay_keys)
            (no_decay if skip else decay).append(param)
        return [
            {"params": decay, "weight_decay": self.optimizer_config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def configure_optimizers(self) -> dict:
        params = [p for p in self.parameters() if p.requires_grad]
        fused = bool(params) and all(p.is_cuda for p in params)  # fused kernels need CUDA
        config = self.optimizer_config
        optimizer = torch.optim.AdamW(
            self.parameter_groups(), lr=config.lr, betas=config.betas, fused=fused or None
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, round(config.warmup_fraction * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, warmup)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def stage_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """A previous training stage's weights as this stage reads them (``stage.init_checkpoint``):
        a family whose next stage leaves modules out (FUSE's injection layers) drops theirs."""
        return state

    def on_fit_start(self) -> None:
        rank_zero_info(parameter_report(self))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Plain types only in the hyper-parameters (dataclasses as dicts), so checkpoints
        load with ``weights_only=True``; the constructors accept the dicts back."""
        hparams = checkpoint.get("hyper_parameters", {})
        for key, value in list(hparams.items()):
            if is_dataclass(value) and not isinstance(value, type):
                hparams[key] = asdict(value)


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
