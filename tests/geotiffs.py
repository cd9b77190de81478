"""GeoTIFFs that the tests write with rasterio: a projected (UTM) reflectance raster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

#: UTM zone 33N; the raster's top-left corner lies near 45.15° N, 15.0° E.
UTM_CRS = "EPSG:32633"
ORIGIN = (500_000.0, 5_000_000.0)


def write_utm_geotiff(
    path: Path,
    height: int = 96,
    width: int = 160,
    bands: int = 3,
    pixel_m: float = 10.0,
    nodata_corner: int = 0,
    seed: int = 0,
) -> Path:
    """A uint16 reflectance GeoTIFF (values 0..4000, bright square in the middle) with
    nodata 0; ``nodata_corner`` pixels of the top-left corner are nodata.

    Three bands by default: a file an RGB model reads without a band choice (issue 24: any
    other count needs ``bands``); band ``b``'s values do not depend on ``bands``, so bands 1-3
    of a 4-band file equal the 3-band file's."""
    rng = np.random.default_rng(seed)
    data = rng.uniform(200, 1500, (bands, height, width)).astype(np.uint16)
    data[:, height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] += 2500
    data[:, :nodata_corner, :nodata_corner] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff",
        height=height,
        width=width,
        count=bands,
        dtype="uint16",
        crs=UTM_CRS,
        transform=from_origin(*ORIGIN, pixel_m, pixel_m),
        nodata=0,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path
