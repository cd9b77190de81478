"""The generators' prediction writer: one JSON line per answer (``zoo predict``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from zoo.io import atomic_write

__all__ = ["OneFileWriter", "PredictionWriter"]


class OneFileWriter(BasePredictionWriter):
    """A prediction writer whose output is one file, ``output_path``.

    Each rank writes its own file (``.rank{r}`` suffix under DDP). An existing file is an error
    before anything is predicted, unless ``overwrite`` (``zoo predict --overwrite``).

    Args:
        output_path: the file.
        overwrite: replace the file of an earlier predict.
        write_interval: Lightning's ``batch`` or ``epoch``.
    """

    def __init__(
        self, output_path: str, overwrite: bool = False, write_interval: str = "epoch"
    ) -> None:
        super().__init__(write_interval=write_interval)
        self.output_path = output_path
        self.overwrite = overwrite

    def _path(self, trainer) -> Path:
        path = Path(self.output_path)
        if trainer.world_size > 1:
            path = path.with_name(f"{path.name}.rank{trainer.global_rank}")
        return path

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Refuse, before predicting, to replace an earlier output unless ``overwrite``.

        Args:
            trainer: the trainer.
            pl_module: the model.
            stage: Lightning's stage (``predict`` checks).

        Raises:
            FileExistsError: the file exists and ``overwrite`` is off.
        """
        path = self._path(trainer)
        if stage == "predict" and path.exists() and not self.overwrite:
            raise FileExistsError(
                f"{path} exists (written by an earlier predict): pass --overwrite to replace it, "
                "or set the writer's output_path to a new file"
            )


class PredictionWriter(OneFileWriter):
    """Write one JSON line per sample (id, question, answer, reference) to ``output_path``.

    The file is written to a temporary name and moved into place at the end, so no half-written
    file is left behind (see :class:`OneFileWriter` for ranks and ``overwrite``).

    Args:
        output_path: the JSON-lines file.
        overwrite: replace the file of an earlier predict.
    """

    def __init__(self, output_path: str = "predictions.jsonl", overwrite: bool = False) -> None:
        super().__init__(output_path, overwrite, write_interval="epoch")

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        """Write every row of ``predict_step``'s output, atomically.

        Args:
            trainer: the trainer.
            pl_module: the model.
            predictions: each batch's rows.
            batch_indices: Lightning's sample indices (unused).
        """
        path = self._path(trainer)
        with atomic_write(path) as f:
            for batch in predictions:
                for row in batch:
                    f.write(json.dumps(row) + "\n")
        rank_zero_info(f"wrote {sum(len(b) for b in predictions)} predictions to {path}")
