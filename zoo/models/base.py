"""What every zoo task shares: the optimizer, the schedule and the parameter report."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from lightning import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from typing_extensions import Self

from zoo.errors import renamed
from zoo.groups import as_group
from zoo.preprocessing import ImageTransform, Preprocessing

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
        #: How images are prepared for this model: its training data's, kept from ``fit`` and
        #: stored in its checkpoints (None: not known yet, e.g. a model built in Python).
        self.preprocessing: Preprocessing | None = None
        #: The resolved training config (YAML) the zoo CLI gives it, stored in its checkpoints.
        self.training_config: str | None = None

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Self:
        """The trained model of a zoo checkpoint, alone: no datamodule, no pretrained files.

        The checkpoint carries the tokenizer, the image preprocessing, the class names and the
        pretrained sources' configurations (:mod:`zoo.model_contents`); the model comes back in
        eval mode on the CPU (or ``map_location``) with ``model.preprocessing`` set.

        Args:
            checkpoint_path: a checkpoint written by this version of the zoo.
            map_location: where to put the weights.
            hparams_file: not supported (the checkpoint holds the hyper-parameters).
            strict: the state dict must match the model exactly (default True).
            **kwargs: constructor arguments that replace the stored ones.

        Returns:
            The model.

        Raises:
            ValueError: a ``hparams_file``, a checkpoint of another family, or one written
                before the zoo stored the tokenizer (the message says how to load it).
        """
        from zoo.model_contents import load_checkpoint_model

        if hparams_file is not None:
            raise ValueError("hparams_file: a zoo checkpoint holds its hyper-parameters")
        return load_checkpoint_model(
            checkpoint_path, map_location, strict is not False, expected_class=cls, **kwargs
        )

    @property
    def transform(self) -> ImageTransform:
        """One image (PIL, or a ``C×H×W`` array) as the normalized tensor this model reads:
        its :attr:`preprocessing`, else the ImageNet statistics at its ``image_size``."""
        image_size = int(self.hparams.get("image_size") or 224)
        return ImageTransform(self.preprocessing or Preprocessing(image_size=image_size))

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write this model as a self-contained folder (:func:`zoo.pretrained.save_pretrained`).

        Args:
            folder: the folder.

        Returns:
            The folder.
        """
        from zoo.pretrained import save_pretrained

        return save_pretrained(self, folder)

    @classmethod
    def from_pretrained(cls, source: str | Path, **kwargs: Any) -> Self:
        """A trained model of this family from a checkpoint, an export folder or
        ``hf-hub:org/name`` (:func:`zoo.pretrained.load_source`), in eval mode.

        Args:
            source: what to load.
            **kwargs: ``device`` and ``dtype`` to move it to.

        Returns:
            The model.

        Raises:
            ValueError: ``source`` holds a model of another family.
        """
        from zoo.pretrained import load_source

        model = load_source(source)
        if kwargs:
            model = model.to(**kwargs)
        if not isinstance(model, cls):
            raise ValueError(
                f"{source} holds a {type(model).__name__}, not a {cls.__name__}: use zoo.load"
            )
        return model

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Export this model with its model card and upload it (:func:`zoo.hub.push_to_hub`).

        Args:
            repo_id: ``org/name`` on the Hugging Face Hub.
            **kwargs: :func:`zoo.hub.push_to_hub`'s options (``token``, ``private``, ...).

        Returns:
            The URL of the commit.
        """
        from zoo.hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)

    def setup(self, stage: str) -> None:
        """Keep the training data's :attr:`preprocessing` when a fit starts.

        Args:
            stage: ``fit``, ``validate``, ``test`` or ``predict``.
        """
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        found = getattr(datamodule, "preprocessing", None)
        if stage == "fit" and isinstance(found, Preprocessing):
            self.preprocessing = found

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
        The checkpoint also gets what inference needs besides the weights (the tokenizer, the
        preprocessing, the training config: :mod:`zoo.model_contents`).

        Args:
            checkpoint: the checkpoint Lightning is about to write.
        """
        hparams = checkpoint.get("hyper_parameters", {})
        for key, value in list(hparams.items()):
            if is_dataclass(value) and not isinstance(value, type):
                hparams[key] = asdict(value)
        # What inference needs besides the weights: the model then loads alone.
        from zoo.model_contents import CONTENTS_KEY, contents_of

        checkpoint[CONTENTS_KEY] = contents_of(self, self.training_config).to_checkpoint()


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
