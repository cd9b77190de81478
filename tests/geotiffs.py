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
    return _write(path, data, from_origin(*ORIGIN, pixel_m, pixel_m), nodata=0)


def _write(
    path: Path, data: np.ndarray, transform, nodata: float | None = None, names: tuple = ()
) -> Path:
    """Write ``C×H×W`` ``data`` as a GeoTIFF in :data:`UTM_CRS`, bands described by ``names``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    profile = dict(driver="GTiff", height=height, width=width, count=count, dtype=data.dtype)
    with rasterio.open(
        path, "w", crs=UTM_CRS, transform=transform, nodata=nodata, **profile
    ) as dst:
        dst.write(data)
        for i, name in enumerate(names):
            dst.set_band_description(i + 1, name)
    return path


def write_multiband_geotiff(
    path: Path,
    bands: int,
    dtype: str = "uint16",
    size: int = 32,
    seed: int = 0,
    descriptions: tuple[str, ...] | None = None,
) -> Path:
    """A small ``bands``-band GeoTIFF in UTM 33N: uint8 (NAIP-like, 0..255), uint16
    (Sentinel-2-like reflectance, 0..10000) or float32 (reflectance 0..1), with band names."""
    rng = np.random.default_rng(seed)
    high = {"uint8": 255, "uint16": 10_000, "float32": 1.0}[dtype]
    data = (rng.uniform(0, high, (bands, size, size))).astype(dtype)
    transform = from_origin(ORIGIN[0] + 320.0 * seed, ORIGIN[1], 10.0, 10.0)
    return _write(path, data, transform, names=descriptions or ())


#: Sentinel-2 L1C's 13 bands in file order (B10 is cirrus).
SENTINEL2_BANDS = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip
#: NAIP's four bands.
NAIP_BANDS = ("R", "G", "B", "NIR")


def write_band_table(
    root: Path, bands: int, dtype: str, per_split: int = 8, descriptions: tuple[str, ...] = ()
) -> Path:
    """An image-caption-location table in SkyScript's CSV format (``train.csv``, ``val.csv``,
    ``test.csv``) over ``bands``-band GeoTIFFs, two classes (and captions) alternating."""
    import pandas as pd

    for split_id, split in enumerate(("train", "val", "test")):
        rows = []
        for i in range(per_split):
            seed = 100 * split_id + i
            name = f"images/{split}_{i}.tif"
            write_multiband_geotiff(root / name, bands, dtype, seed=seed, descriptions=descriptions)
            label = "field" if i % 2 else "river"
            row = {"filepath": name, "title": f"a {label}", "label": label}
            rows.append(row | {"lat": 45.1, "lon": 15.0 + 0.01 * i})
        pd.DataFrame(rows).to_csv(root / f"{split}.csv", index=False)
    return root
