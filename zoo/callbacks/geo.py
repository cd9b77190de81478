"""GeoPix masks over an image folder: stitched per image, georeferenced by the file itself.

:class:`~zoo.callbacks.masks.MaskPredictionWriter` hands here every predicted chip that comes
from :class:`~zoo.data.images.ImageFolderDataModule` (it has a ``path``). Once all chips of a
file are in, ``{output_dir}/{file stem}/`` receives:

* ``mask_{k}.png``: the mask of the image's ``k``-th distinct phrase at the file's full
  resolution: each chip's mask probabilities for that phrase (0 where the chip did not name
  it) resized to its window, blended where chips overlap with a cosine taper
  (:func:`~zoo.data.rasters.blend_weights`: a chip's edges, where its context is cut off,
  count little, so no seam shows), then thresholded at 0.5, and cleared on nodata (rows
  without probabilities, boolean masks, are blended as 0/1 votes and kept at >= 0.5);
* ``masks.tif`` (georeferenced files with a phrase, ``mask_raster``): the same masks as one
  Cloud-Optimized GeoTIFF (GDAL's COG driver: tiled, deflate, overviews), a 0/255 uint8 band
  per phrase (its description), the source's CRS and transform, and the provenance tag;
* ``masks.geojson`` (georeferenced files): one FeatureCollection, a (Multi)Polygon per phrase
  in EPSG:4326, vectorized with :func:`rasterio.features.shapes` in the file's own transform
  and reprojected from its CRS with :func:`rasterio.warp.transform_geom`; properties
  ``phrase``, ``category``, ``target``, ``image``;
* ``answer.json``: the file, the question, each chip's window, answer, phrases, categories,
  and the provenance (:mod:`zoo.provenance`). It is written last (atomically, like every
  file here), so it marks the file finished: a rerun into the same ``output_dir`` skips the
  files that have one (:meth:`FolderMasks.finished`) and redoes the rest.

GeoJSON files carry the provenance as a top-level ``provenance`` member, the merged
GeoParquet in its schema metadata (:func:`zoo.provenance.write_geoparquet`).

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
from zoo.provenance import PROVENANCE_KEY, write_geoparquet

__all__ = ["FolderMasks", "merged_frame", "write_mask_cog"]

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
        provenance: recorded in every output (:func:`zoo.provenance.provenance`); None: none.
        mask_raster: also write each georeferenced file's masks as a COG, ``masks.tif``.
    """

    def __init__(
        self,
        output_dir: Path,
        merged: MergedFormat | None = "parquet",
        provenance: dict[str, Any] | None = None,
        mask_raster: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.merged = merged
        self.provenance = provenance
        self.mask_raster = mask_raster
        self.pending: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.features: list[dict[str, Any]] = []
        self.resumed: list[str] = []  # files an earlier run finished (their features are read)

    def folder(self, path: str) -> Path:
        """The output folder of a file of the image folder.

        Args:
            path: the file, relative to the image folder.

        Returns:
            ``{output_dir}/{path without suffix, / as __}``.
        """
        return self.output_dir / Path(path).with_suffix("").as_posix().replace("/", "__")

    def finished(self, paths: list[str]) -> list[str]:
        """The files an earlier run into ``output_dir`` finished (their ``answer.json`` is
        written, with this run's provenance); remembered, so :meth:`finish` merges them too.

        Args:
            paths: the image folder's files (relative paths).

        Returns:
            The finished ones.

        Raises:
            FileExistsError: a finished file was predicted by another model, checkpoint,
                band choice or chipping (or before outputs recorded theirs).
        """
        done = []
        for path in paths:
            record_path = self.folder(path) / "answer.json"
            if not record_path.is_file():
                continue
            earlier = json.loads(record_path.read_text()).get("provenance")
            differs = _differences(earlier, self.provenance)
            if differs:
                raise FileExistsError(
                    f"{record_path} was predicted with other settings ({differs}): pass "
                    "--overwrite to redo every file, or set the writer's output_dir to a new "
                    "folder"
                )
            done.append(path)
        self.resumed += done
        return done

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
        folder = self.folder(path)
        folder.mkdir(parents=True, exist_ok=True)
        phrases: dict[str, str] = {}  # phrase -> category, in order of first appearance
        for chip in chips:
            for phrase, category in zip(chip["phrases"], chip["category"], strict=True):
                phrases.setdefault(phrase, category)
        names = list(phrases)
        per_chip = []
        probabilities = all("probabilities" in chip for chip in chips)
        for chip in chips:
            masks = None
            if len(chip["phrases"]):
                masks = _numpy(chip["probabilities"]) if probabilities else as_bool(chip["masks"])
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
        if names:
            blended = stitch(per_chip, windows, info["height"], info["width"], blend="cosine")
            full = blended > 0.5 if probabilities else blended >= 0.5  # logits > 0; half the votes
        else:
            full = np.zeros((0, info["height"], info["width"]), dtype=bool)
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
            if self.provenance is not None:
                collection["provenance"] = self.provenance  # a foreign member (RFC 7946, 6.1)
            atomic_write_text(folder / "masks.geojson", json.dumps(collection) + "\n")
            record["geojson"] = "masks.geojson"
            self.features += collection["features"]
            if self.mask_raster:
                write_mask_cog(folder / "masks.tif", full, crs, transform, names, self.provenance)
                record["mask_raster"] = "masks.tif"
        elif crs is None:
            record["geojson"] = None  # a file without CRS has pixel masks only
        record["provenance"] = self.provenance
        # Last, atomically: a file with its answer.json is finished (see ``finished``).
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
        for path in self.resumed:  # finished by an earlier run: their features from its files
            geojson = self.folder(path) / "masks.geojson"
            if geojson.is_file():
                self.features += json.loads(geojson.read_text())["features"]
        target = self.output_dir / f"masks.{self.merged}"
        frame = merged_frame(self.features)
        with atomic_path(target) as tmp:
            if self.merged == "parquet":
                write_geoparquet(frame, tmp, self.provenance)
            else:
                frame.to_file(tmp, driver="GPKG", layer="masks")
        self.features, self.resumed = [], []
        return target


def _numpy(values: Any) -> np.ndarray:
    """A tensor or array as a float32 ``K×H×W`` numpy array."""
    values = values.detach().float().cpu().numpy() if hasattr(values, "detach") else values
    values = np.asarray(values, dtype=np.float32)
    return values[None] if values.ndim == 2 else values


def _differences(earlier: dict[str, Any] | None, now: dict[str, Any] | None) -> str:
    """What differs between two provenance records that a resumed run must share ('' if
    nothing); the checkpoint's path and the zoo version may differ."""
    if earlier is None:
        return "no provenance recorded"
    ignored = {"checkpoint", "zoo_version"}
    keys = (set(earlier) | set(now or {})) - ignored
    return ", ".join(
        f"{k}: {earlier.get(k)!r} then, {(now or {}).get(k)!r} now"
        for k in sorted(keys)
        if earlier.get(k) != (now or {}).get(k)
    )


def write_mask_cog(
    path: Path,
    masks: np.ndarray,
    crs: str,
    transform: Any,
    names: list[str],
    provenance: dict[str, Any] | None = None,
) -> None:
    """Write ``K×H×W`` bool masks as a Cloud-Optimized GeoTIFF (0/255 uint8 bands), atomically.

    GDAL's COG driver tiles it (512 px blocks), compresses it (deflate) and adds overviews.

    Args:
        path: the ``.tif`` file.
        masks: the masks at the source's resolution.
        crs: the source's CRS.
        transform: the source's affine transform.
        names: each band's description (the phrase).
        provenance: stored as the ``zoo_provenance`` tag (JSON), when given.
    """
    profile = dict(
        driver="COG",
        height=masks.shape[1],
        width=masks.shape[2],
        count=len(masks),
        dtype="uint8",
        crs=crs,
        transform=transform,
        compress="deflate",
    )
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(masks.astype(np.uint8) * 255)
        for k, name in enumerate(names, start=1):
            dst.set_band_description(k, name)
        if provenance is not None:
            dst.update_tags(**{PROVENANCE_KEY: json.dumps(provenance)})
