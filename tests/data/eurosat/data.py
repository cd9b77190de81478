#!/usr/bin/env python3
"""Write a tiny fake EuroSAT (all 13 bands) in torchgeo's on-disk layout.

One 8x8 13-band uint16 GeoTIFF per class and split under
``ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/<Class>_<n>.tif`` and the split
files ``eurosat-{train,val,test}.txt`` (which, as the real ones, list ``.jpg`` names). Every image
is uniform: B04 (red) = 300 * (class index + 1), B03 = 1500, B02 = 0, the other bands 1000, so
the RGB the loader makes (reflectance / 3000, clipped, times 255) is known. Run from anywhere:
``python tests/data/eurosat/data.py``.
"""

import shutil
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

ROOT = Path(__file__).parent
SIZE = 8
CLASSES = (
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
)
BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")
SPLITS = {"train": 1, "val": 2, "test": 3}  # file number of each class in each split

base = ROOT / "ds" / "images" / "remote_sensing" / "otherDatasets" / "sentinel_2" / "tif"
shutil.rmtree(ROOT / "ds", ignore_errors=True)
rng = np.random.default_rng(0)
names: dict[str, list[str]] = {split: [] for split in SPLITS}
for c, name in enumerate(CLASSES):
    (base / name).mkdir(parents=True)
    for split, n in SPLITS.items():
        pixels = np.full((len(BANDS), SIZE, SIZE), 1000, dtype=np.uint16)
        pixels[BANDS.index("B04")] = 300 * (c + 1)
        pixels[BANDS.index("B03")] = 1500
        pixels[BANDS.index("B02")] = 0
        profile = {
            "driver": "GTiff",
            "dtype": "uint16",
            "count": len(BANDS),
            "width": SIZE,
            "height": SIZE,
            "crs": CRS.from_epsg(32631),
            "compress": "deflate",
            "transform": from_origin(500000 + 1000 * c, 5000000 - 1000 * n, 10, 10),
        }
        with rasterio.open(base / name / f"{name}_{n}.tif", "w", **profile) as f:
            f.write(pixels)
        names[split].append(f"{name}_{n}.jpg")
for split, files in names.items():
    order = rng.permutation(len(files))
    (ROOT / f"eurosat-{split}.txt").write_text("".join(f"{files[i]}\n" for i in order))
