#!/usr/bin/env python3
"""Write tiny fake scene benchmarks in SkyScript's benchmark layout (AID, fMoW, Million-AID,
RSI-CB256): ``<name>/classnames.txt``, ``<name>/<table>.csv`` (filepath,title,label) and 8×8
PNGs under ``<name>/images/<class>/``, four per class. Each image is uniform, its colour a
function of the class index (red = 60 * index, green = 120, blue = 255 - 60 * index).
Run from anywhere: ``python tests/data/scene_benchmarks/data.py``.
"""

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).parent
SIZE = 8
#: folder, table, a few of the real class names (the layout is real; the class list is cut).
DATASETS = {
    "aid": ("aid_img_txt_pairs_test.csv", ["airport", "bare land", "baseball field"]),
    "fmow": ("fmow_img_txt_pairs_val.csv", ["airport", "amusement park", "aquaculture"]),
    "millionaid": ("img_txt_pairs_train.csv", ["apron", "bare land", "baseball field"]),
    "rsicb256": ("img_txt_pairs_train.csv", ["airplane", "airport runway", "artificial grassland"]),
}

for name, (table, classes) in DATASETS.items():
    folder = ROOT / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "classnames.txt").write_text("".join(f"{c}\n" for c in classes))
    rows = []
    for c, label in enumerate(classes):
        (folder / "images" / label).mkdir(parents=True)
        pixels = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
        pixels[...] = (60 * c, 120, 255 - 60 * c)
        for n in range(4):
            path = f"images/{label}/{label.replace(' ', '_')}_{n}.png"
            Image.fromarray(pixels).save(folder / path)
            rows.append({"filepath": path, "title": f"a satellite image of {label}", "label": label})
    with open(folder / table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["filepath", "title", "label"])
        writer.writeheader()
        writer.writerows(rows)
