"""``zoo embed``: the image (and location) embeddings of a folder of images, as GeoParquet.

    zoo embed --config configs/flavars.yaml --config configs/data/images.yaml \\
        --data.init_args.root my_tifs --ckpt_path runs/.../last.ckpt --output embeddings.parquet

One row per image or chip: ``path``, ``chip`` (index in its file), ``window`` (row, col,
height, width in source pixels), ``lat``/``lon`` of the chip centre, ``valid_fraction``
(share of pixels that are not nodata), ``image_embedding`` (the unit embedding of a model with
a text encoder, FLAVARS; else the pooled backbone features), ``location_embedding`` (FLAVARS,
georeferenced chips; null otherwise) and ``geometry``: the chip's footprint in EPSG:4326
(null for a file without CRS). ``geopandas.read_parquet`` reads it back; the file's schema
metadata holds the provenance (model, checkpoint and its SHA-256, bands, chip size, overlap,
zoo version: :func:`zoo.provenance.read_geoparquet_provenance`). Chips are windowed reads
(:mod:`zoo.data.images`), so memory is set by the batch, not by the scene. Arguments after
the configs (``--data.init_args.bands=[4,3,2]`` ...) are the usual config overrides.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import torch
from lightning import LightningDataModule, LightningModule
from shapely.geometry import shape
from tqdm import tqdm

from zoo.io import atomic_path
from zoo.main import build_from_configs, run_parser
from zoo.models.capabilities import ImageFeatures, TextEmbeddings, describe
from zoo.provenance import provenance, write_geoparquet

__all__ = ["embed_folder", "main"]


def _batches(datamodule: LightningDataModule, device: torch.device) -> Iterator[dict[str, Any]]:
    """The predict batches on ``device``, normalized as in a Trainer."""
    for batch in datamodule.predict_dataloader():
        batch = datamodule.transfer_batch_to_device(batch, device, 0)
        yield datamodule.on_after_batch_transfer(batch, 0)


@torch.no_grad()
def embed_folder(
    model: LightningModule, datamodule: LightningDataModule, progress: bool = True
) -> gpd.GeoDataFrame:
    """One row per chip of the datamodule's predict set (see the module docstring)."""
    if not isinstance(model, ImageFeatures | TextEmbeddings):
        raise TypeError(
            f"{type(model).__name__} has no {describe(ImageFeatures)}: nothing to embed"
        )
    model.eval()
    datamodule.setup("predict")
    rows, geometries = [], []
    total = len(datamodule.predict_dataloader()) if progress else None
    batches = _batches(datamodule, model.device)
    for batch in tqdm(batches, total=total, desc="embedding", unit="batch", disable=not progress):
        if isinstance(model, TextEmbeddings):
            image = model.encode_image(batch["image"])
        else:
            image = model.image_features(batch["image"])
        geo = batch.get("geo") or [None] * len(image)
        location = None
        located = [i for i, g in enumerate(geo) if g is not None]
        if located and hasattr(model, "encode_location"):
            where = torch.tensor(
                [[geo[i]["lat"], geo[i]["lon"]] for i in located], device=model.device
            )
            location = dict(
                zip(located, model.encode_location(where).float().cpu().numpy(), strict=True)
            )
        image = image.float().cpu().numpy()
        for i in range(len(image)):
            g, chip = geo[i], batch["chip"][i]
            rows.append(
                {
                    "path": batch["path"][i],
                    "chip": chip["index"],
                    "window": chip["window"],
                    "lat": g["lat"] if g else None,
                    "lon": g["lon"] if g else None,
                    "valid_fraction": chip["valid_fraction"],
                    "image_embedding": image[i].astype(np.float32),
                    "location_embedding": None
                    if location is None or i not in location
                    else location[i].astype(np.float32),
                }
            )
            geometries.append(shape(g["footprint"]) if g else None)
    return gpd.GeoDataFrame(rows, geometry=geometries, crs="EPSG:4326")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``zoo embed`` (config overrides pass through)."""
    parser = run_parser("zoo embed", __doc__, "a checkpoint, state dict or safetensors export")
    parser.add_argument("--output", required=True, help="the GeoParquet file to write")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> Path:
    """Run ``zoo embed``; returns the written file."""
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    cli = build_from_configs(args.config, args.ckpt_path, overrides)
    frame = embed_folder(cli.model, cli.datamodule, progress=not args.no_progress)
    settings = getattr(cli.datamodule, "chip_settings", None)
    record = provenance(cli.model, cli.ckpt_path, settings() if settings else None)
    output = Path(args.output)
    with atomic_path(output) as tmp:
        write_geoparquet(frame, tmp, record)
    print(f"wrote {len(frame)} rows to {output}")
    return output


if __name__ == "__main__":
    main()
