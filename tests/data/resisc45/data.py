#!/usr/bin/env python3
"""Write a tiny fake NWPU-RESISC45 in torchgeo's on-disk layout.

One 8x8 JPEG per class and split under ``NWPU-RESISC45/<class>/<class>_<nnn>.jpg`` and the
split files ``resisc45-{train,val,test}.txt``. Every image is uniform, its colour a function of
the class index (red = 5 * index, green = 128, blue = 255 - 5 * index). Run from anywhere:
``python tests/data/resisc45/data.py``.
"""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).parent
SIZE = 8
CLASSES = (
    "airplane",
    "airport",
    "baseball_diamond",
    "basketball_court",
    "beach",
    "bridge",
    "chaparral",
    "church",
    "circular_farmland",
    "cloud",
    "commercial_area",
    "dense_residential",
    "desert",
    "forest",
    "freeway",
    "golf_course",
    "ground_track_field",
    "harbor",
    "industrial_area",
    "intersection",
    "island",
    "lake",
    "meadow",
    "medium_residential",
    "mobile_home_park",
    "mountain",
    "overpass",
    "palace",
    "parking_lot",
    "railway",
    "railway_station",
    "rectangular_farmland",
    "river",
    "roundabout",
    "runway",
    "sea_ice",
    "ship",
    "snowberg",
    "sparse_residential",
    "stadium",
    "storage_tank",
    "tennis_court",
    "terrace",
    "thermal_power_station",
    "wetland",
)
SPLITS = {"train": 1, "val": 2, "test": 3}

shutil.rmtree(ROOT / "NWPU-RESISC45", ignore_errors=True)
names: dict[str, list[str]] = {split: [] for split in SPLITS}
for c, name in enumerate(CLASSES):
    (ROOT / "NWPU-RESISC45" / name).mkdir(parents=True)
    pixels = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    pixels[...] = (5 * c, 128, 255 - 5 * c)
    for split, n in SPLITS.items():
        filename = f"{name}_{n:03d}.jpg"
        Image.fromarray(pixels).save(ROOT / "NWPU-RESISC45" / name / filename, quality=95)
        names[split].append(filename)
for split, files in names.items():
    (ROOT / f"resisc45-{split}.txt").write_text("".join(f"{f}\n" for f in files))
