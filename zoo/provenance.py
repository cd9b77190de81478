"""Where an output came from: model, checkpoint (path and SHA-256), bands, chips, zoo version.

``predict`` over an image folder (GeoPix's GeoJSON, GeoParquet and mask COGs) and
``zoo embed`` (GeoParquet) record :func:`provenance` in their files: a top-level
``provenance`` member of a GeoJSON FeatureCollection, the ``zoo_provenance`` key of a
GeoParquet file's schema metadata (:func:`write_geoparquet`; ``pyarrow.parquet.read_schema``
reads it back) and the ``zoo_provenance`` tag of a GeoTIFF. The checkpoint's hash is computed
once per file (streamed in 1 MiB blocks, cached by path, size and modification time).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import pyarrow.parquet as pq
from torch import nn

__all__ = [
    "PROVENANCE_KEY",
    "provenance",
    "read_geoparquet_provenance",
    "sha256_file",
    "write_geoparquet",
]

PROVENANCE_KEY = "zoo_provenance"
"""The key of the provenance in GeoParquet schema metadata and GeoTIFF tags."""

_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file, streamed (never read whole), computed once per version of it.

    Args:
        path: the file.

    Returns:
        The hex digest.
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def provenance(
    model: nn.Module, ckpt_path: str | Path | None, chips: dict[str, Any] | None
) -> dict[str, Any]:
    """The provenance of a model's outputs over an image folder.

    Args:
        model: the model that predicted.
        ckpt_path: its checkpoint, state dict or export (None: the config's initial weights).
        chips: the folder's reading: ``bands``, ``chip_size``, ``overlap`` (and any other
            setting to record; :meth:`~zoo.data.images.ImageFolderDataModule.chip_settings`).

    Returns:
        ``model`` (class path), ``checkpoint`` and ``checkpoint_sha256`` (None without one),
        the ``chips`` settings and ``zoo_version``: JSON-ready.
    """
    import zoo

    kind = type(model)
    record: dict[str, Any] = {
        "model": f"{kind.__module__}.{kind.__qualname__}",
        "checkpoint": None if ckpt_path is None else str(ckpt_path),
        "checkpoint_sha256": None,
    }
    if ckpt_path is not None and Path(ckpt_path).is_file():  # a folder export has no one hash
        record["checkpoint_sha256"] = sha256_file(ckpt_path)
    return record | dict(chips or {}) | {"zoo_version": zoo.__version__}


def write_geoparquet(frame: gpd.GeoDataFrame, path: str | Path, record: dict[str, Any]) -> None:
    """Write a GeoParquet file whose schema metadata also holds ``record`` (as JSON).

    Args:
        frame: the rows (geopandas writes the ``geo`` metadata).
        path: the file (write it through :func:`zoo.io.atomic_path`).
        record: the provenance, under :data:`PROVENANCE_KEY`.
    """
    frame.to_parquet(path)
    table = pq.read_table(path)
    metadata = dict(table.schema.metadata or {})
    metadata[PROVENANCE_KEY.encode()] = json.dumps(record).encode()
    pq.write_table(table.replace_schema_metadata(metadata), path)


def read_geoparquet_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance :func:`write_geoparquet` stored in a file (None if it has none).

    Args:
        path: the GeoParquet file.

    Returns:
        The record, or None.
    """
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(PROVENANCE_KEY.encode())
    return None if raw is None else json.loads(raw)
