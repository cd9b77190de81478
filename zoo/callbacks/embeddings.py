"""Write an embedding model's predictions (FLAVARS ``predict``) as one Parquet table.

One row per sample: ``id`` (its position in the predict set when the data has none), the
sample's ``caption``, ``label``, ``lat``/``lon`` and, from an image folder, ``path`` and
``window`` (row, col, height, width in source pixels) where the batch has them, then the unit
``image_embedding``, ``text_embedding`` and ``location_embedding`` that ``predict_step`` returned
(``pandas.read_parquet`` reads it back; ``zoo embed`` writes the GeoParquet of an image folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from zoo.callbacks.prediction_writer import OneFileWriter
from zoo.io import atomic_path

__all__ = ["EmbeddingWriter"]


class EmbeddingWriter(OneFileWriter):
    """Collect ``predict_step``'s ``{"image", "text", "location"}`` embeddings (``B×E`` each)
    with the batch's sample columns and write them to ``output_path`` when predict ends,
    atomically (see :class:`~zoo.callbacks.prediction_writer.OneFileWriter` for ranks and
    ``overwrite``).

    Args:
        output_path: the Parquet file.
        overwrite: replace the file of an earlier predict.
    """

    def __init__(self, output_path: str = "predictions.parquet", overwrite: bool = False) -> None:
        super().__init__(output_path, overwrite, write_interval="batch")
        self.rows: list[dict[str, Any]] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Refuse to replace an earlier output (unless ``overwrite``); start with no rows."""
        super().setup(trainer, pl_module, stage)
        self.rows = []

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not isinstance(prediction, dict) or "image" not in prediction:
            raise TypeError(
                f"EmbeddingWriter writes the embeddings of an embedding model's predict_step (a "
                f"dict with 'image'); {type(pl_module).__name__} returned {type(prediction).__name__}:"
                " use zoo.callbacks.PredictionWriter or zoo.callbacks.MaskPredictionWriter for it"
            )
        embeddings = {k: v.float().cpu().numpy() for k, v in prediction.items()}
        for i in range(len(embeddings["image"])):
            row: dict[str, Any] = {"id": _item(batch.get("id"), i, len(self.rows))}
            for key in ("caption", "label", "path"):
                if key in batch:
                    row[key] = _item(batch[key], i)
            if "location" in batch:
                row["lat"], row["lon"] = (float(v) for v in batch["location"][i])
            if "chip" in batch:
                row["window"] = list(batch["chip"][i]["window"])
            for key, values in embeddings.items():
                row[f"{key}_embedding"] = values[i].astype(np.float32)
            self.rows.append(row)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_epoch_end(trainer, pl_module)
        path = self._path(trainer)
        with atomic_path(path) as tmp:
            pd.DataFrame(self.rows).to_parquet(tmp)
        rank_zero_info(f"wrote the embeddings of {len(self.rows)} samples to {path}")
        self.rows = []


def _item(values: Any, i: int, default: Any = None) -> Any:
    """Sample ``i`` of a batch column (a list or a tensor) as a plain value."""
    if values is None:
        return default
    value = values[i]
    return value.item() if hasattr(value, "item") else value
