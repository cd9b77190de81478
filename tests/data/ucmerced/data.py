#!/usr/bin/env python3
"""Write a tiny fake UC Merced Land Use in torchgeo's on-disk layout.

One RGB TIFF per class and split under ``UCMerced_LandUse/Images/<class>/<class><nn>.tif`` (8x8,
except the test images, 8 wide and 7 tall like the few real 256x247 ones) and the split files
``uc_merced-{train,val,test}.txt``. Every image is uniform, its colour a function of the class
index (red = 10 * index, green = 200 - 5 * index, blue = 60). Run from anywhere:
``python tests/data/ucmerced/data.py``.
"""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).parent
CLASSES = (
    "agricultural",
    "airplane",
    "baseballdiamond",
    "beach",
    "buildings",
    "chaparral",
    "denseresidential",
    "forest",
    "freeway",
    "golfcourse",
    "harbor",
    "intersection",
    "mediumresidential",
    "mobilehomepark",
    "overpass",
    "parkinglot",
    "river",
    "runway",
    "sparseresidential",
    "storagetanks",
    "tenniscourt",
)
SPLITS = {"train": 0, "val": 1, "test": 2}

base = ROOT / "UCMerced_LandUse" / "Images"
shutil.rmtree(ROOT / "UCMerced_LandUse", ignore_errors=True)
names: dict[str, list[str]] = {split: [] for split in SPLITS}
for c, name in enumerate(CLASSES):
    (base / name).mkdir(parents=True)
    for split, n in SPLITS.items():
        pixels = np.empty((7 if split == "test" else 8, 8, 3), dtype=np.uint8)
        pixels[...] = (10 * c, 200 - 5 * c, 60)
        filename = f"{name}{n:02d}.tif"
        Image.fromarray(pixels).save(base / name / filename)
        names[split].append(filename)
for split, files in names.items():
    (ROOT / f"uc_merced-{split}.txt").write_text("".join(f"{f}\n" for f in files))
