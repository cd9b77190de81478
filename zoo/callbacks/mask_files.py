"""Masks as files: single-band PNGs, JSON-ready values, and georeferenced polygons.

Shared by :mod:`zoo.callbacks.masks` (one folder per predicted sample) and
:mod:`zoo.callbacks.geo` (masks stitched over a whole GeoTIFF). The pixel grid of a sample
without its own geotransform is georeferenced with the local equirectangular approximation
that :mod:`zoo.callbacks.masks` describes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rasterio.features import shapes
from rasterio.transform import Affine
from torch import Tensor

from zoo.io import atomic_write

__all__ = [
    "EARTH_RADIUS_M",
    "METRES_PER_DEGREE",
    "as_bool",
    "mask_features",
    "pixel_transform",
    "plain",
    "write_png",
]

EARTH_RADIUS_M = 6_371_008.8
"""Mean Earth radius (IUGG) of the spherical approximation."""
METRES_PER_DEGREE = math.pi * EARTH_RADIUS_M / 180.0
"""Length of one degree of latitude (and of longitude at the equator) on that sphere."""


def pixel_transform(lat: float, lon: float, gsd_m: float, height: int, width: int) -> Affine:
    """Affine map from pixel (column, row) to (lon, lat), centred on ``(lat, lon)``.

    Local equirectangular approximation (see the module docstring); pixel corners are at
    integer coordinates, so the image centre is ``(width / 2, height / 2)``.
    """
    if not -90.0 < lat < 90.0:
        raise ValueError(f"latitude {lat} must be strictly between -90 and 90 degrees")
    if gsd_m <= 0:
        raise ValueError(f"ground sample distance must be positive, got {gsd_m} m")
    dlat = gsd_m / METRES_PER_DEGREE
    dlon = dlat / math.cos(math.radians(lat))
    return Affine(dlon, 0.0, lon - dlon * width / 2, 0.0, -dlat, lat + dlat * height / 2)


def mask_features(
    masks: np.ndarray, transform: Affine, categories: Sequence[Any] | None = None
) -> dict[str, Any]:
    """A GeoJSON FeatureCollection with one feature per ``K×H×W`` bool mask.

    Each mask is vectorized with :func:`rasterio.features.shapes` (4-connected regions, holes
    kept); its regions form one Polygon or MultiPolygon. Properties: ``target`` (the index)
    and ``category`` when ``categories`` is given.
    """
    features = []
    for k, mask in enumerate(masks):
        mask = np.ascontiguousarray(mask, dtype=np.uint8)
        rings = [
            geometry["coordinates"]
            for geometry, value in shapes(mask, mask=mask.astype(bool), transform=transform)
            if value == 1
        ]
        if not rings:
            geometry = None
        elif len(rings) == 1:
            geometry = {"type": "Polygon", "coordinates": rings[0]}
        else:
            geometry = {"type": "MultiPolygon", "coordinates": rings}
        properties: dict[str, Any] = {"target": k}
        if categories is not None:
            properties["category"] = categories[k]
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def write_png(path: Path, mask: np.ndarray) -> None:
    """A single-band 0/255 PNG of a boolean mask, written atomically."""
    with atomic_write(path, "wb") as f:
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(f, format="PNG")


def as_bool(masks: Tensor | np.ndarray) -> np.ndarray:
    """``K×H×W`` bool: floats are probabilities (> 0.5), integers and bools are > 0."""
    masks = torch.as_tensor(masks).detach().cpu()
    if masks.dim() == 2:
        masks = masks[None]
    return (masks > 0.5 if masks.is_floating_point() else masks > 0).numpy()


def plain(value: Any) -> Any:
    """Tensors and numpy values as JSON-serializable Python values."""
    if isinstance(value, (Tensor, np.ndarray, np.generic)):
        return torch.as_tensor(value).tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
