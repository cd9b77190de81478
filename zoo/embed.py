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

An interrupted run continues where it stopped: each file's rows are written, once all its
chips are embedded, to a part beside the output (``.{output name}.parts/``, each part
atomically, so a half-written one never counts); the same command again skips the files that
have a part with the same provenance (a log line says how many) and, at the end, joins the
parts into the output and removes them. ``--overwrite`` discards an interrupted run's parts.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import torch
from lightning import LightningDataModule, LightningModule
from shapely.geometry import shape
from tqdm import tqdm

from zoo.io import atomic_path
from zoo.main import build_from_configs, run_parser
from zoo.models.capabilities import ImageFeatures, TextEmbeddings, describe
from zoo.provenance import provenance, read_geoparquet_provenance, write_geoparquet

__all__ = ["embed_folder", "main", "parts_folder"]

log = logging.getLogger(__name__)


def parts_folder(output: Path) -> Path:
    """Where ``zoo embed`` keeps an unfinished run's per-file parts: beside ``output``.

    Args:
        output: the GeoParquet file being written.

    Returns:
        ``{output's folder}/.{output name}.parts``.
    """
    return output.parent / f".{output.name}.parts"


def _part(parts: Path, path: str) -> Path:
    """One file's part (``a/b.tif`` -> ``a__b.tif.parquet``)."""
    return parts / f"{path.replace('/', '__')}.parquet"


def _write_part(parts: Path, path: str, rows: list[Any], record: dict[str, Any] | None) -> None:
    """Write one file's ``(row, geometry)`` pairs as its part, atomically."""
    frame = gpd.GeoDataFrame([r for r, _ in rows], geometry=[g for _, g in rows], crs="EPSG:4326")
    parts.mkdir(parents=True, exist_ok=True)
    with atomic_path(_part(parts, path)) as tmp:
        write_geoparquet(frame, tmp, record or {})


def _finished(parts: Path, paths: list[str], record: dict[str, Any] | None) -> list[str]:
    """The files an interrupted run finished: a part with the same provenance (the checkpoint
    path and zoo version may differ); another provenance is an error."""
    done = []
    for path in paths:
        part = _part(parts, path)
        if not part.is_file():
            continue
        earlier = read_geoparquet_provenance(part) or {}
        keys = (set(earlier) | set(record or {})) - {"checkpoint", "zoo_version"}
        differs = [k for k in sorted(keys) if earlier.get(k) != (record or {}).get(k)]
        if differs:
            raise FileExistsError(
                f"{part} (an interrupted zoo embed) was made with other settings ("
                + ", ".join(f"{k}: {earlier.get(k)!r} then" for k in differs)
                + "): pass --overwrite to start over"
            )
        done.append(path)
    return done


def _batches(datamodule: LightningDataModule, device: torch.device) -> Iterator[dict[str, Any]]:
    """The predict batches on ``device``, normalized as in a Trainer."""
    for batch in datamodule.predict_dataloader():
        batch = datamodule.transfer_batch_to_device(batch, device, 0)
        yield datamodule.on_after_batch_transfer(batch, 0)


@torch.no_grad()
def embed_folder(
    model: LightningModule,
    datamodule: LightningDataModule,
    progress: bool = True,
    parts: Path | None = None,
    record: dict[str, Any] | None = None,
) -> gpd.GeoDataFrame:
    """One row per chip of the datamodule's predict set (see the module docstring).

    Args:
        model: a model with image features (FLAVARS: embeddings, with locations).
        datamodule: an image folder's datamodule.
        progress: show a progress bar.
        parts: write each finished file's rows there and skip the files an interrupted run
            finished (None: keep every row in memory, skip nothing).
        record: the provenance the parts carry (and must match to be skipped).

    Returns:
        The rows, in the folder's order, with their footprints (EPSG:4326).

    Raises:
        TypeError: the model has no image features.
        FileExistsError: a part of an interrupted run has another provenance.
    """
    if not isinstance(model, ImageFeatures | TextEmbeddings):
        raise TypeError(
            f"{type(model).__name__} has no {describe(ImageFeatures)}: nothing to embed"
        )
    model.eval()
    datamodule.setup("predict")
    dataset = datamodule.predict_dataset
    paths = [dataset.relative(f) for f in dataset.files] if parts is not None else []
    if parts is not None:
        done = _finished(parts, paths, record)
        if done:
            dataset.exclude(done)
            log.info(
                "resuming: %d of %d files finished by an interrupted run are skipped "
                "(--overwrite starts over)",
                len(done),
                len(paths),
            )
    rows, geometries = [], []
    pending: dict[str, list[Any]] = defaultdict(list)
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
            row = {
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
            geometry = shape(g["footprint"]) if g else None
            if parts is None:
                rows.append(row)
                geometries.append(geometry)
                continue
            done_rows = pending[row["path"]]
            done_rows.append((row, geometry))
            if len(done_rows) == chip["count"]:  # the file is finished: its part, atomically
                _write_part(parts, row["path"], pending.pop(row["path"]), record)
    if parts is None:
        return gpd.GeoDataFrame(rows, geometry=geometries, crs="EPSG:4326")
    frames = [gpd.read_parquet(_part(parts, p)) for p in paths if _part(parts, p).is_file()]
    if not frames:
        return gpd.GeoDataFrame(rows, geometry=geometries, crs="EPSG:4326")
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``zoo embed`` (config overrides pass through).

    Returns:
        The parser.
    """
    parser = run_parser("zoo embed", __doc__, "a checkpoint, state dict or safetensors export")
    parser.add_argument("--output", required=True, help="the GeoParquet file to write")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--overwrite", action="store_true", help="discard an interrupted run's parts"
    )
    return parser


def main(argv: list[str] | None = None) -> Path:
    """Run ``zoo embed``: embed the folder, resuming an interrupted run, and write the output.

    Args:
        argv: the command line (None: ``sys.argv``).

    Returns:
        The written file.
    """
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    cli = build_from_configs(args.config, args.ckpt_path, overrides)
    settings = getattr(cli.datamodule, "chip_settings", None)
    record = provenance(cli.model, cli.ckpt_path, settings() if settings else None)
    output = Path(args.output)
    parts = parts_folder(output)
    if args.overwrite and parts.exists():
        shutil.rmtree(parts)
    frame = embed_folder(cli.model, cli.datamodule, not args.no_progress, parts, record)
    with atomic_path(output) as tmp:
        write_geoparquet(frame, tmp, record)
    shutil.rmtree(parts, ignore_errors=True)
    print(f"wrote {len(frame)} rows to {output}")
    return output


if __name__ == "__main__":
    main()
