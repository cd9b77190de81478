"""What every zoo task shares: the optimizer, the schedule and the parameter report."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, TypeVar

import torch
from lightning import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from zoo.errors import renamed
from zoo.groups import as_group

__all__ = ["OptimizerConfig", "ZooTask", "as_group", "regroup_hyperparameters", "warmup_cosine"]

T = TypeVar("T")


def regroup_hyperparameters(
    hparams: Mapping[str, Any], parameters: Iterable[str]
) -> dict[str, Any]:
    """Old flat hyper-parameter keys moved into the groups that took them.

    The renames are :data:`zoo.errors.RENAMED_KEYS` (the same table that tells a user of an
    old YAML key its new name): a key the class no longer takes whose new name is
    ``group.field`` of one of its ``parameters`` moves there; any other key is kept.

    Args:
        hparams: a checkpoint's hyper-parameters.
        parameters: the names the class's constructor takes now.

    Returns:
        A copy with the old keys inside their groups.
    """
    parameters = set(parameters)
    out: dict[str, Any] = {}
    moved: dict[str, dict[str, Any]] = {}
    for key, value in hparams.items():
        new = None if key in parameters else renamed(key, parameters)
        if new is None or "." not in new:
            out[new or key] = value
            continue
        group, leaf = new.split(".", 1)
        moved.setdefault(group, {})[leaf] = value
    for group, values in moved.items():
        current = out.get(group)
        base = asdict(current) if is_dataclass(current) else dict(current or {})
        out[group] = base | values
    return out


def warmup_cosine(step: int, total: int, warmup: int, final: float = 0.0) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine to ``final``.

    Args:
        step: the optimizer step (0-based).
        total: all steps of the run.
        warmup: steps of linear warm-up.
        final: the factor at the end of the cosine.

    Returns:
        The factor on the peak learning rate.
    """
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

    Args:
        optimizer: AdamW and its schedule (a dict as a checkpoint stores it; None: defaults).
    """

    #: Parameters whose names contain one of these get no weight decay.
    no_decay_keys = ("bias", "norm", "logit_scale", "token", "pos_embed", "embeddings")

    def __init__(self, optimizer: OptimizerConfig | dict | None = None) -> None:
        super().__init__()
        if isinstance(optimizer, dict):  # as stored in a checkpoint's hyper-parameters
            optimizer = OptimizerConfig(**optimizer)
        self.optimizer_config = optimizer or OptimizerConfig()

    def parameter_groups(self) -> list[dict]:
        """Trainable parameters split into decayed and not-decayed groups.

        Returns:
            AdamW's parameter groups: the decayed ones, then those without weight decay
            (biases, norms, embeddings, tokens: :attr:`no_decay_keys`).
        """
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
        """AdamW over :meth:`parameter_groups` with the warm-up + cosine schedule per step.

        Returns:
            Lightning's optimizer and scheduler dict.
        """
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
        """A previous training stage's weights as this stage reads them.

        A family whose next stage leaves modules out (FUSE's injection layers) drops theirs.

        Args:
            state: the state dict of ``stage.init_checkpoint``.

        Returns:
            The tensors this stage loads.
        """
        return state

    def on_fit_start(self) -> None:
        """Log the trainable and frozen parameter counts."""
        rank_zero_info(parameter_report(self))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Plain types only in the hyper-parameters (dataclasses as dicts).

        Checkpoints then load with ``weights_only=True``; the constructors accept the dicts back.

        Args:
            checkpoint: the checkpoint Lightning is about to write.
        """
        hparams = checkpoint.get("hyper_parameters", {})
        for key, value in list(hparams.items()):
            if is_dataclass(value) and not isinstance(value, type):
                hparams[key] = asdict(value)


def parameter_report(module: nn.Module) -> str:
    """Trainable and frozen parameter counts per top-level child.

    Args:
        module: the model.

    Returns:
        One line for the whole model, then one per child with parameters.
    """
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
