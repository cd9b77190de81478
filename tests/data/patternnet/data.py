#!/usr/bin/env python3
"""Write a tiny fake PatternNet in torchgeo's on-disk layout.

PatternNet has no official split (the datamodule splits it at random with a fixed seed), so
there are no split files: two 8x8 JPEGs per class under
``PatternNet/images/<class>/<class><nnn>.jpg``.
Every image is uniform, its colour a function of the class index (red = 6 * index, green = 30,
blue = 250 - 6 * index). Run from anywhere: ``python tests/data/patternnet/data.py``.
"""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).parent
SIZE = 8
CLASSES = (
    "airplane",
    "baseball_field",
    "basketball_court",
    "beach",
    "bridge",
    "cemetery",
    "chaparral",
    "christmas_tree_farm",
    "closed_road",
    "coastal_mansion",
    "crosswalk",
    "dense_residential",
    "ferry_terminal",
    "football_field",
    "forest",
    "freeway",
    "golf_course",
    "harbor",
    "intersection",
    "mobile_home_park",
    "nursing_home",
    "oil_gas_field",
    "oil_well",
    "overpass",
    "parking_lot",
    "parking_space",
    "railway",
    "river",
    "runway",
    "runway_marking",
    "shipping_yard",
    "solar_panel",
    "sparse_residential",
    "storage_tank",
    "swimming_pool",
    "tennis_court",
    "transformer_station",
    "wastewater_treatment_plant",
)

base = ROOT / "PatternNet" / "images"
shutil.rmtree(ROOT / "PatternNet", ignore_errors=True)
for c, name in enumerate(CLASSES):
    (base / name).mkdir(parents=True)
    pixels = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    pixels[...] = (6 * c, 30, 250 - 6 * c)
    for n in (1, 2):
        Image.fromarray(pixels).save(base / name / f"{name}{n:03d}.jpg", quality=95)
