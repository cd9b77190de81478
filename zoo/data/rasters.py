"""A user's own imagery as geodata: reading rasters, stretching, chips and their footprints.

GeoTIFF, PNG and JPEG files are all read with rasterio (GDAL): the bands a user picks (by
:mod:`zoo.data.bands`' rule, never silently), the file's nodata, its CRS and affine transform
(none for a plain PNG or JPEG). Reflectance (uint16, float) is scaled to [0, 255] by a per-band
percentile stretch over the image's valid pixels, so every chip of an image shares one scale,
or (``percentiles`` None) kept raw for a model whose per-band statistics normalize it. A raster larger than the model's input
is cut into square chips that overlap; :func:`stitch` puts per-chip results back together,
blending overlaps with a cosine taper (:func:`blend_weights`) where asked.

Scenes larger than memory: :func:`read_raster` with a ``window`` reads only that window (a
rasterio windowed read; a tiled or Cloud-Optimized GeoTIFF is read block by block), so a
folder's chips never need the whole file in memory. Their shared stretch comes from
:func:`stretch_limits`: the percentiles over a decimated read of at most
:data:`STATS_PIXELS` pixels per band (GDAL reads a COG's overview for it); a file no larger
than that is read at full resolution, so its limits are exact.
Footprints and chip centres are given in EPSG:4326 (lon/lat), reprojected with
:func:`rasterio.warp.transform_geom` from the file's own CRS.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.transform import Affine
from rasterio.warp import transform as transform_points
from rasterio.warp import transform_geom
from rasterio.windows import Window as RioWindow

from zoo.data.bands import BandChoice, bands_of, read_bands

__all__ = [
    "RASTER_EXTENSIONS",
    "Raster",
    "STATS_PIXELS",
    "Window",
    "apply_limits",
    "blend_weights",
    "centre_lat_lon",
    "chip_windows",
    "footprint",
    "percentile_limits",
    "read_raster",
    "stitch",
    "stretch",
    "stretch_limits",
    "to_wgs84",
    "window_transform",
]

RASTER_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
"""File endings an image folder reads (case-insensitive)."""

WGS84 = "EPSG:4326"

STATS_PIXELS = 1024 * 1024
"""Pixels per band that :func:`stretch_limits` takes its percentiles over (a larger file is
read decimated, nearest neighbour, to at most this many)."""


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


def percentile_limits(
    values: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float] = (2.0, 98.0)
) -> np.ndarray:
    """Per band, the ``percentiles`` of the valid pixels: the limits of :func:`stretch`.

    Args:
        values: ``C×H×W`` pixel values.
        valid: bool ``H×W``, the pixels the percentiles are taken over.
        percentiles: ``(low, high)``, with ``0 <= low < high <= 100``.

    Returns:
        Float64 ``C×2`` (low, high) per band; NaN without a valid pixel.

    Raises:
        ValueError: the percentiles are out of order or out of range.
    """
    low_q, high_q = percentiles
    if not 0.0 <= low_q < high_q <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    if not valid.any():
        return np.full((len(values), 2), np.nan)
    return np.stack([np.percentile(band[valid], [low_q, high_q]) for band in values])


def apply_limits(values: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """Map each band's ``(low, high)`` limits to 0 and 255 (clipped).

    A band whose limits are equal maps to 0, as do all bands of limits that are NaN (an image
    without a valid pixel).

    Args:
        values: ``C×H×W`` pixel values.
        limits: ``C×2`` from :func:`percentile_limits` or :func:`stretch_limits`.

    Returns:
        Float32 ``C×H×W`` in [0, 255].
    """
    out = np.zeros(values.shape, dtype=np.float32)
    if np.isnan(limits).any():
        return out
    for c, band in enumerate(values):
        low, high = limits[c]
        scale = 255.0 / (high - low) if high > low else 0.0
        out[c] = np.clip((band - low) * scale, 0.0, 255.0)
    return out


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
    return apply_limits(values, percentile_limits(values, valid, percentiles))


def _open(path: Path) -> Any:
    """``rasterio.open`` with a corrupt or foreign file explained (a context manager)."""
    try:
        return rasterio.open(path)
    except RasterioIOError as error:
        raise RuntimeError(
            f"could not read image {path}: {error}; the file is corrupt or not a raster "
            f"({', '.join(RASTER_EXTENSIONS)})"
        ) from error


def _choice(bands: Sequence[int | str] | BandChoice | None, channels: int) -> BandChoice:
    """``bands`` as a :class:`~zoo.data.bands.BandChoice` for a ``channels``-band model."""
    choice = bands if isinstance(bands, BandChoice) else BandChoice.of(bands)
    if choice.bands is None and choice.channels != channels and not isinstance(bands, BandChoice):
        choice = BandChoice(None, channels, choice.names)
    return choice


def stretch_limits(
    path: str | Path,
    bands: Sequence[int | str] | BandChoice | None = None,
    percentiles: tuple[float, float] | None = (2.0, 98.0),
    max_pixels: int = STATS_PIXELS,
    channels: int = 3,
) -> np.ndarray | None:
    """The per-band stretch limits of a whole file, read decimated to at most ``max_pixels``.

    A file of at most ``max_pixels`` pixels is read whole, so its limits equal those of
    :func:`stretch` over a full read; a larger one is read with a nearest-neighbour decimation
    (GDAL uses a Cloud-Optimized GeoTIFF's overview), so memory stays bounded and the
    percentiles are those of a regular sample of its pixels.

    Args:
        path: the image file.
        bands: the bands to read (see :func:`read_raster`).
        percentiles: ``(low, high)``; None means no stretch.
        max_pixels: the most pixels per band to read.
        channels: the model's input channels (when ``bands`` is not given).

    Returns:
        Float64 ``C×2`` limits, or None for a uint8 file or ``percentiles`` None (no stretch).

    Raises:
        ValueError: a band choice that does not fit the file (:func:`zoo.data.bands.select_bands`)
            or bad ``percentiles``.
        RuntimeError: the file is corrupt or not a raster.
    """
    path = Path(path)
    choice = _choice(bands, channels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with _open(path) as src:
            selected = bands_of(src, path, choice, repeat_grey=False)
            if percentiles is None or np.dtype(src.dtypes[selected[0] - 1]) == np.uint8:
                return None
            factor = max(1, math.ceil(math.sqrt(src.height * src.width / max_pixels)))
            shape = (len(selected), -(-src.height // factor), -(-src.width // factor))
            data = src.read(selected, out_shape=shape, masked=True, resampling=Resampling.nearest)
    valid = ~np.ma.getmaskarray(data).any(0)
    return percentile_limits(np.ma.getdata(data).astype(np.float64), valid, percentiles)


def read_raster(
    path: str | Path,
    bands: Sequence[int | str] | BandChoice | None = None,
    percentiles: tuple[float, float] | None = (2.0, 98.0),
    channels: int = 3,
    window: Window | None = None,
    limits: np.ndarray | None = None,
) -> Raster:
    """Read ``bands`` (1-based, rasterio's numbering, or band names) of an image file, or of
    one window of it.

    The bands follow :func:`zoo.data.bands.select_bands` (never a silent choice: a file whose
    band count is not the model's needs ``bands``). uint8 pixels are used as they are; other
    types are stretched by ``percentiles``, taken over the whole file's valid pixels (a window
    too: see :func:`stretch_limits`), or kept as raw values without them.

    Args:
        path: the image file (any format rasterio reads).
        bands: the bands to read, or a :class:`~zoo.data.bands.BandChoice`; None reads a file
            with exactly ``channels`` bands whole (an RGBA PNG's alpha dropped); any other file
            needs ``bands`` (e.g. ``[1, 1, 1]`` for a grey image, ``[4, 3, 2]`` for Sentinel-2
            RGB).
        percentiles: the stretch of non-uint8 files to [0, 255] (None: their raw values, for a
            model whose per-band statistics normalize them).
        channels: the model's input channels (when ``bands`` is not given).
        window: read only this window (a windowed read: memory is the window's, not the
            file's); None reads the whole file.
        limits: the stretch limits of the whole file (``C×2``, :func:`stretch_limits`), so that
            the chips of one file share them without recomputing; None computes them (a
            whole read: exactly; a window: :func:`stretch_limits`).

    Returns:
        The pixels, the validity mask and, where the file has them, its CRS and transform (of
        the window when one is read).

    Raises:
        ValueError: ``bands`` is missing for a file whose band count is not the model's, or
            names a band that does not exist.
        RuntimeError: the file is corrupt or not a raster.
    """
    path = Path(path)
    choice = _choice(bands, channels)
    rio = None if window is None else RioWindow(window.col, window.row, window.width, window.height)
    values, valid, dtype = read_bands(path, choice, repeat_grey=False, window=rio)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with _open(path) as src:
            crs = src.crs.to_wkt() if src.crs is not None else None
            transform = None
            if src.crs is not None:
                transform = src.transform
                if window is not None:
                    transform = transform @ Affine.translation(window.col, window.row)
    if dtype == np.uint8 or percentiles is None:
        pixels = values
    elif limits is not None:
        pixels = apply_limits(values.astype(np.float64), limits)
    elif window is None:
        pixels = stretch(values.astype(np.float64), valid, percentiles)
    else:
        pixels = apply_limits(values.astype(np.float64), stretch_limits(path, choice, percentiles))
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


def _ramps(starts: Sequence[int], lengths: Sequence[int]) -> list[np.ndarray]:
    """Per chip along one axis, weights that taper over the pixels it shares with its
    neighbours: the rising half of a Hann window (sin²) over the overlap with the previous
    chip, the falling half (cos²) over the overlap with the next. Two neighbours' weights over
    their shared strip sum to 1; outside any overlap a weight is 1. Sampled at pixel centres,
    so every weight is above 0. Written here because numpy's and scipy's Hann windows sample a
    whole symmetric window at integer points, not a half window over a given strip."""
    out = []
    for j, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        weight = np.ones(length, dtype=np.float64)
        if j > 0:
            shared = starts[j - 1] + lengths[j - 1] - start
            if shared > 0:
                t = (np.arange(shared) + 0.5) / shared
                weight[:shared] *= np.sin(0.5 * np.pi * t) ** 2
        if j + 1 < len(starts):
            shared = start + length - starts[j + 1]
            if shared > 0:
                t = (np.arange(shared) + 0.5) / shared
                weight[length - shared :] *= np.cos(0.5 * np.pi * t) ** 2
        out.append(weight)
    return out


def blend_weights(windows: Sequence[Window]) -> list[np.ndarray]:
    """Each window's ``height×width`` blending weights: a cosine taper over its overlaps.

    Separable: the product of a row and a column taper (see :func:`stitch`). Where windows do
    not overlap (``overlap`` 0) every weight is 1.

    Args:
        windows: the windows of one raster (:func:`chip_windows`: a grid, equal sizes along
            each axis).

    Returns:
        Float32 weights, one array per window, in its order.
    """
    row_starts = sorted({w.row for w in windows})
    col_starts = sorted({w.col for w in windows})
    heights = {w.row: w.height for w in windows}
    widths = {w.col: w.width for w in windows}
    rows = dict(zip(row_starts, _ramps(row_starts, [heights[r] for r in row_starts]), strict=True))
    cols = dict(zip(col_starts, _ramps(col_starts, [widths[c] for c in col_starts]), strict=True))
    return [np.outer(rows[w.row], cols[w.col]).astype(np.float32) for w in windows]


def stitch(
    chips: Sequence[np.ndarray],
    windows: Sequence[Window],
    height: int,
    width: int,
    blend: Literal["mean", "cosine"] = "mean",
) -> np.ndarray:
    """Average per-chip ``K×h×w`` results into one ``K×height×width`` raster.

    Each chip is resized (nearest neighbour) to its window, then every pixel is the (weighted)
    mean over the chips that cover it, so overlapping chips vote. ``mean`` weighs every chip
    alike; ``cosine`` weighs each chip by :func:`blend_weights`, which fall smoothly to near 0
    at the chip's overlapping edges, so a chip's border (where its context is cut off) counts
    little and no seam shows where chips meet. Without overlap both are the chips themselves.
    Pixels no chip covers are 0.

    Args:
        chips: the per-chip ``K×h×w`` results.
        windows: each chip's window (:func:`chip_windows`).
        height: the raster's rows.
        width: the raster's columns.
        blend: ``mean`` or ``cosine``.

    Returns:
        Float32 ``K×height×width``.

    Raises:
        ValueError: no chip, not one window per chip, or an unknown ``blend``.
    """
    if len(chips) != len(windows) or not chips:
        raise ValueError(f"stitch needs one window per chip, got {len(chips)} and {len(windows)}")
    if blend not in ("mean", "cosine"):
        raise ValueError(f"blend must be 'mean' or 'cosine', got {blend!r}")
    weights = (
        blend_weights(windows)
        if blend == "cosine"
        else [np.ones((w.height, w.width), dtype=np.float32) for w in windows]
    )
    total = np.zeros((chips[0].shape[0], height, width), dtype=np.float32)
    count = np.zeros((height, width), dtype=np.float32)
    for chip, w, weight in zip(chips, windows, weights, strict=True):
        rows = (np.arange(w.height) * chip.shape[-2] // w.height)[:, None]
        cols = (np.arange(w.width) * chip.shape[-1] // w.width)[None, :]
        area = (slice(None), slice(w.row, w.row + w.height), slice(w.col, w.col + w.width))
        total[area] += chip[:, rows, cols] * weight
        count[area[1:]] += weight
    return total / np.where(count > 0, count, 1.0)
