"""Write predicted referring-segmentation masks: PNGs, the answer, and geo-referenced polygons.

For each predicted sample ``{output_dir}/{id}/`` receives:

* ``answer.json``: id, question, generated answer, reference (and sentences, categories, geo
  when given), and the names of the mask files;
* ``mask_{k}.png``: the mask of target ``k`` as a single-band 0/255 PNG;
* ``masks.geojson`` when the sample has a location and a ground sample distance: a
  FeatureCollection with one (Multi)Polygon feature per target (null geometry for an empty
  mask) in lon/lat (EPSG:4326).

The pixel grid is geo-referenced with a *local equirectangular* approximation: the image
centre is at ``(lat, lon)``, a pixel spans ``gsd_m / M`` degrees of latitude and
``gsd_m / (M·cos(lat))`` degrees of longitude with ``M = π·R/180`` metres per degree on a
sphere of radius :data:`EARTH_RADIUS_M`; north is up. This is accurate to well under a pixel
for image chips of a few kilometres away from the poles, but is no substitute for the real
geotransform of an orthorectified product; it does not wrap at the antimeridian.

Files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from zoo.callbacks.geo import FolderMasks
from zoo.callbacks.mask_files import (
    EARTH_RADIUS_M,
    METRES_PER_DEGREE,
    as_bool,
    mask_features,
    pixel_transform,
    plain,
    write_png,
)
from zoo.io import atomic_write_text
from zoo.provenance import provenance

__all__ = [
    "EARTH_RADIUS_M",
    "METRES_PER_DEGREE",
    "MaskPredictionWriter",
    "mask_features",
    "pixel_transform",
]

_UNSAFE = re.compile(r"[^\w.-]")


class MaskPredictionWriter(BasePredictionWriter):
    """Write each predicted sample's answer, masks and (geo-located) polygons after each batch.

    ``predict_step`` returns a list of dicts ``{"id", "question", "answer", "reference",
    "masks": K×H×W bool/uint8 tensor, "geo": {"lat", "lon", "gsd_m"} or None}``, optionally
    with ``"category"`` (``K`` values, written as GeoJSON properties) and ``"sentences"``.
    ``masks.geojson`` is written when ``geo`` has ``lat``, ``lon`` and a ``gsd_m`` (metres per
    pixel of the mask).

    Samples from an image folder (with a ``path``; :mod:`zoo.data.images`) are stitched per
    file and georeferenced by the file's own CRS and transform instead, with one merged file
    for the folder, a mask COG per file and the provenance in each: see
    :mod:`zoo.callbacks.geo`. A predict over an image folder into an ``output_dir`` that an
    interrupted (or earlier) run of the same model, checkpoint and chipping wrote continues
    where it stopped: the files it finished are skipped (logged), the rest predicted;
    ``overwrite`` redoes them all.

    Args:
        output_dir: folder of the per-sample folders.
        merged: the image folder's merged features: ``parquet`` (GeoParquet), ``gpkg``
            (GeoPackage) or None.
        overwrite: write into an ``output_dir`` that holds an earlier output (else an error
            before predicting, or for an image folder a resumed run; ``zoo predict
            --overwrite``).
        mask_raster: also write an image folder's masks as a COG per file (``masks.tif``).
    """

    def __init__(
        self,
        output_dir: str = "predictions",
        merged: Literal["parquet", "gpkg"] | None = "parquet",
        overwrite: bool = False,
        mask_raster: bool = True,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.merged = merged
        self.overwrite = overwrite
        self.mask_raster = mask_raster
        self.folder: Any = None  # zoo.callbacks.geo.FolderMasks, made on the first folder sample
        self.count = 0  # samples written by this predict

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Refuse, before predicting, to write into an earlier output unless ``overwrite``; over
        an image folder, skip the files an earlier run finished instead.

        Args:
            trainer: the trainer (its datamodule already set up).
            pl_module: the model.
            stage: Lightning's stage (``predict`` checks).

        Raises:
            FileExistsError: ``output_dir`` holds an earlier output that cannot be resumed.
        """
        datamodule = getattr(trainer, "datamodule", None)
        if stage == "predict" and hasattr(getattr(datamodule, "predict_dataset", None), "exclude"):
            self._resume(trainer, pl_module, datamodule)
            return
        if (
            stage == "predict"
            and not self.overwrite
            and self.output_dir.is_dir()
            and any(self.output_dir.iterdir())
        ):
            raise FileExistsError(
                f"{self.output_dir} holds the output of an earlier predict: pass --overwrite to "
                "write over it, or set the writer's output_dir to a new folder"
            )

    def _resume(self, trainer: Trainer, pl_module: LightningModule, datamodule: Any) -> None:
        """Make the image folder's writer with the run's provenance; skip finished files."""
        record = provenance(pl_module, trainer.ckpt_path, datamodule.chip_settings())
        self.folder = FolderMasks(self.output_dir, self.merged, record, self.mask_raster)
        if self.overwrite:
            return
        dataset = datamodule.predict_dataset
        done = self.folder.finished([dataset.relative(f) for f in dataset.files])
        if done:
            dataset.exclude(done)
            rank_zero_info(
                f"resuming into {self.output_dir}: {len(done)} of {len(dataset.files)} files "
                "finished by an earlier run are skipped (--overwrite redoes them)"
            )

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
        for item in prediction or []:
            self.count += 1
            if "path" in item:
                if self.folder is None:
                    self.folder = FolderMasks(
                        self.output_dir, self.merged, mask_raster=self.mask_raster
                    )
                self.folder.add(item, Path(trainer.datamodule.root))
            else:
                self.write(item)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_epoch_end(trainer, pl_module)
        merged = None
        if self.folder is not None:
            merged = self.folder.finish()
            self.folder = None
        also = f", and every feature in {merged}" if merged is not None else ""
        rank_zero_info(
            f"wrote the answers and masks of {self.count} samples to {self.output_dir}/<id>/{also}"
        )
        self.count = 0

    def write(self, item: dict[str, Any]) -> Path:
        """Write one predicted sample; returns its folder."""
        folder = self.output_dir / _UNSAFE.sub("_", str(item["id"]))
        folder.mkdir(parents=True, exist_ok=True)
        masks = as_bool(item["masks"])
        names = []
        for k, mask in enumerate(masks):
            names.append(f"mask_{k}.png")
            write_png(folder / names[-1], mask)
        categories = plain(item.get("category"))
        geo = item.get("geo")
        record = {
            key: plain(item[key])
            for key in ("id", "question", "answer", "reference", "sentences", "geo")
            if key in item
        }
        record |= {"category": categories} if categories is not None else {}
        record["masks"] = names
        if geo and geo.get("gsd_m") is not None and len(masks):
            transform = pixel_transform(
                float(geo["lat"]), float(geo["lon"]), float(geo["gsd_m"]), *masks.shape[-2:]
            )
            collection = mask_features(masks, transform, categories)
            atomic_write_text(folder / "masks.geojson", json.dumps(collection) + "\n")
            record["geojson"] = "masks.geojson"
        atomic_write_text(folder / "answer.json", json.dumps(record, indent=2) + "\n")
        return folder
