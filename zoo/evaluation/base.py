"""What every evaluation protocol shares: the base class, the run context and the paper's numbers.

An evaluation is an :class:`Evaluation` subclass: its constructor arguments are the protocol's
settings (typed, so jsonargparse checks an evaluation YAML against them), ``data`` the
datamodule it runs on, and :meth:`Evaluation.run` the protocol itself. ``requires`` lists the
capabilities (:mod:`zoo.models.capabilities`) a model must have for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning import LightningDataModule, LightningModule, Trainer
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from zoo.models.capabilities import describe

__all__ = [
    "CapabilityError",
    "Context",
    "Evaluation",
    "PaperNumbers",
    "check_model",
    "baseline_numbers",
    "paper_numbers",
    "strip_prefix",
]

#: Published numbers (percent): ``{metric: value}`` for any model, or
#: ``{model class name: {metric: value}}``.
PaperNumbers = dict[str, float] | dict[str, dict[str, float]]


class CapabilityError(TypeError):
    """The model lacks a capability an evaluation protocol needs."""


def baseline_numbers(paper: Mapping[str, Any] | None, model: str) -> dict[str, dict[str, float]]:
    """The published numbers of the other models of a per-model ``paper`` mapping (the
    baselines a paper's table sets beside ``model``, e.g. MAE and SkyCLIP beside FLAVARS)."""
    paper = paper or {}
    return {name: dict(v) for name, v in paper.items() if name != model and isinstance(v, Mapping)}


def paper_numbers(paper: Mapping[str, Any] | None, model: str) -> dict[str, float]:
    """The published numbers for ``model`` (a class name), or the flat mapping."""
    paper = paper or {}
    if any(isinstance(v, Mapping) for v in paper.values()):
        return dict(paper.get(model) or {})
    return dict(paper)


def check_model(protocol: type[Evaluation], name: str, model: Any) -> None:
    """Raise :class:`CapabilityError` naming the model and what it lacks for ``protocol``."""
    for capability in protocol.requires:
        if not isinstance(model, capability):
            raise CapabilityError(
                f"{protocol.protocol} evaluation {name!r} needs {describe(capability)}: "
                f"{type(model).__name__} does not have it ({protocol.hint})"
            )


@dataclass
class Context:
    """What every protocol gets besides its data: the model, where it runs, the run's settings.

    Attributes:
        model: the model under evaluation (in eval mode, on ``device``).
        device: where batches go.
        ckpt_path: the checkpoint the model's weights came from (UPerNet reloads its encoder).
        limit_batches: at most this many batches per split (smoke runs).
        output: the results folder (Trainer logs go there too).
    """

    model: LightningModule
    device: torch.device
    ckpt_path: str | None = None
    limit_batches: int | None = None
    output: Path = Path("results")

    def batches(self, dm: LightningDataModule, split: str, desc: str) -> Iterator[dict[str, Any]]:
        """Every sample of one split once, unshuffled, normalized, on ``device``."""
        dm.setup("fit" if split == "train" else "test")
        # Not dm.train_dataloader(): torchgeo's training loaders shuffle and drop the last
        # incomplete batch.
        dataset = dm.train_dataset if split == "train" else dm.test_dataset
        loader = DataLoader(
            dataset,
            batch_size=dm.batch_size,
            shuffle=False,
            num_workers=dm.num_workers,
            collate_fn=getattr(dm, "collate_fn", None),
        )
        total = len(loader) if self.limit_batches is None else min(len(loader), self.limit_batches)
        for i, batch in enumerate(tqdm(loader, desc=desc, total=total, leave=False)):
            if i == total:
                break
            batch = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            yield dm.on_after_batch_transfer(batch, 0)

    def trainer(self, **kwargs: Any) -> Trainer:
        """A one-device Trainer without logger or checkpoints, writing under ``output``."""
        return Trainer(
            accelerator="gpu" if self.device.type == "cuda" else "cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            default_root_dir=str(self.output),
            **kwargs,
        )


class Evaluation(ABC):
    """One evaluation: a protocol over a datamodule, with the paper's numbers beside ours.

    Args:
        data: any zoo datamodule (``class_path`` + ``init_args`` in YAML, as in a training
            config); its image size is the model's unless given.
        name: the row label in the results table (default: the config file's name).
        paper: published numbers in percent, ``{metric: value}`` or per model class,
            ``{FLAVARS: {knn_acc: 92.1}}``.
        source: where the paper's numbers come from (paper and table).
    """

    #: The protocol's name in the results table.
    protocol: ClassVar[str] = ""
    #: Capabilities the model needs (:mod:`zoo.models.capabilities`).
    requires: ClassVar[tuple[type, ...]] = ()
    #: What to do instead when a model lacks them.
    hint: ClassVar[str] = "pick another protocol"

    def __init__(
        self,
        data: LightningDataModule,
        *,
        name: str | None = None,
        paper: PaperNumbers | None = None,
        source: str = "",
    ) -> None:
        self.data = data
        self.name = name or self.protocol
        self.paper = dict(paper or {})
        self.source = source

    def paper_numbers(self, model: str) -> dict[str, float]:
        """The published numbers for ``model`` (a class name)."""
        return paper_numbers(self.paper, model)

    def check_model(self, model: Any) -> None:
        """Raise :class:`CapabilityError` if ``model`` lacks what this protocol needs."""
        check_model(type(self), self.name, model)

    @abstractmethod
    def run(self, ctx: Context) -> dict[str, float]:
        """The metrics (fractions, not percent) of ``ctx.model`` on :attr:`data`."""


def strip_prefix(result: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """``{"test_miou": x}`` -> ``{"miou": x}`` for the keys with ``prefix``."""
    return {k.removeprefix(prefix): float(v) for k, v in result.items() if k.startswith(prefix)}
