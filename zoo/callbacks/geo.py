"""GeoPix masks over an image folder: stitched per image, georeferenced by the file itself.

:class:`~zoo.callbacks.masks.MaskPredictionWriter` hands here every predicted chip that comes
from :class:`~zoo.data.images.ImageFolderDataModule` (it has a ``path``). Once all chips of a
file are in, ``{output_dir}/{file stem}/`` receives:

* ``mask_{k}.png``: the mask of the image's ``k``-th distinct phrase at the file's full
  resolution: each chip's masks for that phrase resized to its window, averaged where chips
  overlap (kept where at least half of the covering chips agree), and cleared on nodata;
* ``masks.geojson`` (georeferenced files): one FeatureCollection, a (Multi)Polygon per phrase
  in EPSG:4326, vectorized with :func:`rasterio.features.shapes` in the file's own transform
  and reprojected from its CRS with :func:`rasterio.warp.transform_geom`; properties
  ``phrase``, ``category``, ``target``, ``image``;
* ``answer.json``: the file, the question, each chip's window, answer, phrases, categories.

At the end of ``predict`` every feature of the folder goes into one merged file,
``{output_dir}/masks.parquet`` (GeoParquet) or ``masks.gpkg`` (GeoPackage), which GIS tools
and geopandas open.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import rasterio

from zoo.callbacks.mask_files import as_bool, mask_features, plain, write_png
from zoo.data.rasters import Window, stitch, to_wgs84
from zoo.io import atomic_path, atomic_write_text

__all__ = ["FolderMasks", "merged_frame"]

MergedFormat = Literal["parquet", "gpkg"]


def merged_frame(features: list[dict[str, Any]]) -> gpd.GeoDataFrame:
    """GeoJSON features (EPSG:4326) as a GeoDataFrame with their properties as columns."""
    columns = ["image", "phrase", "category", "target", "geometry"]
    if not features:
        return gpd.GeoDataFrame(columns=columns, geometry="geometry", crs="EPSG:4326")
    return gpd.GeoDataFrame.from_features(features, crs="EPSG:4326")[columns]


class FolderMasks:
    """Collect a folder's predicted chips per file and write each file once it is complete.

    Args:
        output_dir: folder of the per-file folders and the merged file.
        merged: ``parquet`` (GeoParquet), ``gpkg`` (GeoPackage) or None (no merged file).
    """

    def __init__(self, output_dir: Path, merged: MergedFormat | None = "parquet") -> None:
        self.output_dir = Path(output_dir)
        self.merged = merged
        self.pending: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.features: list[dict[str, Any]] = []

    def add(self, item: dict[str, Any], root: Path) -> Path | None:
        """Keep one chip's prediction; returns the file's folder once it is written."""
        chips = self.pending[item["path"]]
        chips.append(item)
        if len(chips) < item["chip"]["count"]:
            return None
        del self.pending[item["path"]]
        return self.write_image(root, sorted(chips, key=lambda c: c["chip"]["index"]))

    def write_image(self, root: Path, chips: list[dict[str, Any]]) -> Path:
        """Stitch, vectorize and write the predictions of one file (all its chips)."""
        path = chips[0]["path"]
        folder = self.output_dir / Path(path).with_suffix("").as_posix().replace("/", "__")
        folder.mkdir(parents=True, exist_ok=True)
        phrases: dict[str, str] = {}  # phrase -> category, in order of first appearance
        for chip in chips:
            for phrase, category in zip(chip["phrases"], chip["category"], strict=True):
                phrases.setdefault(phrase, category)
        names = list(phrases)
        per_chip = []
        for chip in chips:
            masks = as_bool(chip["masks"]) if len(chip["phrases"]) else None
            planes = np.zeros((len(names), *chip["masks"].shape[-2:]), dtype=np.float32)
            for k, phrase in enumerate(chip["phrases"]):
                planes[names.index(phrase)] = np.maximum(planes[names.index(phrase)], masks[k])
            per_chip.append(planes)
        info = chips[0]["chip"]
        with rasterio.open(root / path) as src:
            valid = src.dataset_mask() > 0
            crs = src.crs.to_wkt() if src.crs is not None else None
            transform = src.transform
        windows = [Window(*c["chip"]["window"]) for c in chips]
        full = (
            stitch(per_chip, windows, info["height"], info["width"]) >= 0.5
            if names
            else (np.zeros((0, info["height"], info["width"]), dtype=bool))
        )
        full &= valid[None]
        files = []
        for k, mask in enumerate(full):
            files.append(f"mask_{k}.png")
            write_png(folder / files[-1], mask)
        record: dict[str, Any] = {
            "path": path,
            "question": chips[0]["question"],
            "phrases": names,
            "category": [phrases[n] for n in names],
            "masks": files,
            "chips": [
                {
                    "window": c["chip"]["window"],
                    "answer": c["answer"],
                    "phrases": c["phrases"],
                    "category": plain(c["category"]),
                }
                for c in chips
            ],
        }
        if crs is not None and names:
            collection = mask_features(full, transform, [phrases[n] for n in names])
            for feature, phrase in zip(collection["features"], names, strict=True):
                if feature["geometry"] is not None:
                    feature["geometry"] = to_wgs84(feature["geometry"], crs)
                feature["properties"] |= {"phrase": phrase, "image": path}
            atomic_write_text(folder / "masks.geojson", json.dumps(collection) + "\n")
            record["geojson"] = "masks.geojson"
            self.features += collection["features"]
        elif crs is None:
            record["geojson"] = None  # a file without CRS has pixel masks only
        atomic_write_text(folder / "answer.json", json.dumps(record, indent=2) + "\n")
        return folder

    def finish(self) -> Path | None:
        """Write the merged file; an image with chips missing is an error that names it."""
        if self.pending:
            missing = {p: f"{len(c)}/{c[0]['chip']['count']}" for p, c in self.pending.items()}
            raise RuntimeError(
                f"predict ended with chips missing for {missing}: run predict on one device "
                "(each rank sees only part of the chips) and do not limit the predict batches"
            )
        if self.merged is None:
            return None
        target = self.output_dir / f"masks.{self.merged}"
        frame = merged_frame(self.features)
        with atomic_path(target) as tmp:
            if self.merged == "parquet":
                frame.to_parquet(tmp)
            else:
                frame.to_file(tmp, driver="GPKG", layer="masks")
        self.features = []
        return target
