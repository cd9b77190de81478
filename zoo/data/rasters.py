"""A user's own imagery as geodata: reading rasters, stretching, chips and their footprints.

GeoTIFF, PNG and JPEG files are all read with rasterio (GDAL): the bands a user picks (by
:mod:`zoo.data.bands`' rule, never silently), the file's nodata, its CRS and affine transform
(none for a plain PNG or JPEG). Reflectance (uint16, float) is scaled to [0, 255] by a per-band
percentile stretch over the image's valid pixels, so every chip of an image shares one scale,
or (``percentiles`` None) kept raw for a model whose per-band statistics normalize it. A raster larger than the model's input
is cut into square chips that overlap; :func:`stitch` puts per-chip results back together.
Footprints and chip centres are given in EPSG:4326 (lon/lat), reprojected with
:func:`rasterio.warp.transform_geom` from the file's own CRS.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.transform import Affine
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_geom

from zoo.data.bands import BandChoice, read_bands

__all__ = [
    "RASTER_EXTENSIONS",
    "Raster",
    "Window",
    "centre_lat_lon",
    "chip_windows",
    "footprint",
    "read_raster",
    "stitch",
    "stretch",
    "to_wgs84",
    "window_transform",
]

RASTER_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
"""File endings an image folder reads (case-insensitive)."""

WGS84 = "EPSG:4326"


@dataclass(frozen=True)
class Raster:
    """A raster read for the model.

    Attributes:
        pixels: float32 ``C×H×W`` in [0, 255], 0 where invalid.
        valid: bool ``H×W``, False on nodata (in any selected band).
        crs: the file's CRS as WKT, None when it has none.
        transform: pixel (col, row) -> CRS coordinates, None when not georeferenced.
    """

    pixels: np.ndarray
    valid: np.ndarray
    crs: str | None
    transform: Affine | None

    @property
    def georeferenced(self) -> bool:
        """Whether the raster has both a CRS and a transform."""
        return self.crs is not None and self.transform is not None


@dataclass(frozen=True)
class Window:
    """A chip's place in its raster, in source pixels (row and column offsets, size).

    Attributes:
        row: the first row.
        col: the first column.
        height: rows covered.
        width: columns covered.
    """

    row: int
    col: int
    height: int
    width: int

    def as_list(self) -> list[int]:
        """The window as a list, e.g. for a JSON file.

        Returns:
            ``[row, col, height, width]``.
        """
        return [self.row, self.col, self.height, self.width]


def stretch(
    values: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float] = (2.0, 98.0)
) -> np.ndarray:
    """Per band, map the ``percentiles`` of the valid pixels to 0 and 255 (clipped).

    A constant band maps to 0.

    Args:
        values: ``C×H×W`` pixel values.
        valid: bool ``H×W``, the pixels the percentiles are taken over.
        percentiles: ``(low, high)``, with ``0 <= low < high <= 100``.

    Returns:
        Float32 ``C×H×W`` in [0, 255] (zeros without a valid pixel).

    Raises:
        ValueError: the percentiles are out of order or out of range.
    """
    low_q, high_q = percentiles
    if not 0.0 <= low_q < high_q <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    out = np.zeros(values.shape, dtype=np.float32)
    if not valid.any():
        return out
    for c, band in enumerate(values):
        low, high = np.percentile(band[valid], [low_q, high_q])
        scale = 255.0 / (high - low) if high > low else 0.0
        out[c] = np.clip((band - low) * scale, 0.0, 255.0)
    return out


def read_raster(
    path: str | Path,
    bands: Sequence[int | str] | BandChoice | None = None,
    percentiles: tuple[float, float] | None = (2.0, 98.0),
    channels: int = 3,
) -> Raster:
    """Read ``bands`` (1-based, rasterio's numbering, or band names) of an image file.

    The bands follow :func:`zoo.data.bands.select_bands` (never a silent choice: a file whose
    band count is not the model's needs ``bands``). uint8 pixels are used as they are; other
    types are stretched by ``percentiles``, or kept as raw values without them.

    Args:
        path: the image file (any format rasterio reads).
        bands: the bands to read, or a :class:`~zoo.data.bands.BandChoice`; None reads a file
            with exactly ``channels`` bands whole (an RGBA PNG's alpha dropped); any other file
            needs ``bands`` (e.g. ``[1, 1, 1]`` for a grey image, ``[4, 3, 2]`` for Sentinel-2
            RGB).
        percentiles: the stretch of non-uint8 files to [0, 255] (None: their raw values, for a
            model whose per-band statistics normalize them).
        channels: the model's input channels (when ``bands`` is not given).

    Returns:
        The pixels, the validity mask and, where the file has them, its CRS and transform.

    Raises:
        ValueError: ``bands`` is missing for a file whose band count is not the model's, or
            names a band that does not exist.
        RuntimeError: the file is corrupt or not a raster.
    """
    path = Path(path)
    choice = bands if isinstance(bands, BandChoice) else BandChoice.of(bands)
    if choice.bands is None and choice.channels != channels:
        choice = BandChoice(None, channels, choice.names)
    values, valid, dtype = read_bands(path, choice, repeat_grey=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                crs = src.crs.to_wkt() if src.crs is not None else None
                transform = src.transform if src.crs is not None else None
    except RasterioIOError as error:
        raise RuntimeError(
            f"could not read image {path}: {error}; the file is corrupt or not a raster "
            f"({', '.join(RASTER_EXTENSIONS)})"
        ) from error
    if dtype == np.uint8:
        pixels = values
    elif percentiles is None:
        pixels = values
    else:
        pixels = stretch(values.astype(np.float64), valid, percentiles)
    pixels[:, ~valid] = 0.0
    return Raster(pixels, valid, crs, transform)


def chip_windows(height: int, width: int, size: int, overlap: int = 0) -> list[Window]:
    """Square ``size`` windows covering the raster, ``overlap`` pixels shared by neighbours.

    A raster no larger than ``size`` is one window (itself). Along a side longer than ``size``
    the windows advance by ``size - overlap`` and the last one ends at the edge; along a shorter
    side a window spans the whole side.

    Args:
        height: the raster's rows.
        width: the raster's columns.
        size: the chip side, in pixels.
        overlap: pixels shared by neighbouring chips, in ``[0, size)``.

    Returns:
        The windows in row-major order.

    Raises:
        ValueError: ``size`` is below 1 or ``overlap`` outside ``[0, size)``.
    """
    if size < 1:
        raise ValueError(f"chip size must be >= 1 pixel, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, chip size {size}), got {overlap}")

    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        step = size - overlap
        count = math.ceil((length - size) / step) + 1
        return sorted({min(i * step, length - size) for i in range(count)})

    return [
        Window(r, c, min(size, height), min(size, width))
        for r in starts(height)
        for c in starts(width)
    ]


def window_transform(transform: Affine, window: Window, out_height: int, out_width: int) -> Affine:
    """The transform of a chip resized to ``out_height×out_width`` pixels.

    Args:
        transform: the source raster's transform.
        window: the chip's place in the source raster.
        out_height: the resized chip's rows.
        out_width: the resized chip's columns.

    Returns:
        The chip's pixel -> CRS transform.
    """
    return (
        transform
        @ Affine.translation(window.col, window.row)
        @ Affine.scale(window.width / out_width, window.height / out_height)
    )


def footprint(
    crs: str, transform: Affine, height: int, width: int, points: int = 8
) -> dict[str, Any]:
    """The outline of a ``height×width`` pixel grid as a GeoJSON Polygon in EPSG:4326.

    Each edge is densified to ``points`` segments before reprojection, so a projected grid's
    curved outline in lon/lat is followed.

    Args:
        crs: the grid's CRS (WKT or any string rasterio reads).
        transform: the grid's pixel -> CRS transform.
        height: the grid's rows.
        width: the grid's columns.
        points: segments per edge.

    Returns:
        The GeoJSON Polygon in (lon, lat).
    """
    t = np.linspace(0.0, 1.0, points, endpoint=False)
    cols = np.concatenate([t * width, np.full(points, width), (1 - t) * width, np.zeros(points)])
    rows = np.concatenate([np.zeros(points), t * height, np.full(points, height), (1 - t) * height])
    xs, ys = transform @ (cols, rows)
    ring = [[float(x), float(y)] for x, y in zip(xs, ys, strict=True)]
    polygon = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
    return to_wgs84(polygon, crs)


def to_wgs84(geometry: dict[str, Any], crs: str) -> dict[str, Any]:
    """Reproject a GeoJSON geometry from ``crs`` to EPSG:4326 (lon, lat).

    Args:
        geometry: the GeoJSON geometry.
        crs: its CRS.

    Returns:
        The reprojected geometry.
    """
    return dict(transform_geom(crs, WGS84, geometry))


def centre_lat_lon(crs: str, transform: Affine, height: int, width: int) -> tuple[float, float]:
    """(lat, lon) in degrees of the centre of a ``height×width`` pixel grid.

    Args:
        crs: the grid's CRS.
        transform: the grid's pixel -> CRS transform.
        height: the grid's rows.
        width: the grid's columns.

    Returns:
        ``(lat, lon)``.
    """
    x, y = transform @ (width / 2.0, height / 2.0)
    (lon,), (lat,) = transform_points(crs, WGS84, [x], [y])
    return float(lat), float(lon)


def stitch(
    chips: Sequence[np.ndarray], windows: Sequence[Window], height: int, width: int
) -> np.ndarray:
    """Average per-chip ``K×h×w`` results into one ``K×height×width`` raster.

    Each chip is resized (nearest neighbour) to its window, then every pixel is the mean over the
    chips that cover it, so overlapping chips vote. Pixels no chip covers are 0.

    Args:
        chips: the per-chip ``K×h×w`` results.
        windows: each chip's window (:func:`chip_windows`).
        height: the raster's rows.
        width: the raster's columns.

    Returns:
        Float32 ``K×height×width``.

    Raises:
        ValueError: no chip, or not one window per chip.
    """
    if len(chips) != len(windows) or not chips:
        raise ValueError(f"stitch needs one window per chip, got {len(chips)} and {len(windows)}")
    total = np.zeros((chips[0].shape[0], height, width), dtype=np.float32)
    count = np.zeros((height, width), dtype=np.float32)
    for chip, w in zip(chips, windows, strict=True):
        rows = (np.arange(w.height) * chip.shape[-2] // w.height)[:, None]
        cols = (np.arange(w.width) * chip.shape[-1] // w.width)[None, :]
        total[:, w.row : w.row + w.height, w.col : w.col + w.width] += chip[:, rows, cols]
        count[w.row : w.row + w.height, w.col : w.col + w.width] += 1.0
    return total / np.maximum(count, 1.0)
