#!/usr/bin/env python3
"""Write a tiny fake NWPU-Captions in its on-disk layout.

``dataset_nwpu.json`` maps each class name to its images: ``{"<class>": [{"filename",
"split", "raw", "raw_1", "raw_2", "raw_3", "raw_4", "imgid", "sentids"}]}``; images in
``NWPU_images/<class>/<class>_<nnn>.jpg`` (16x16 RGB JPEG, the real ones are 256 px). Two
classes, three images each (train, val, test in that order). Caption k of an image is
``"<class> picture <n> , sentence <k> ."``; the test ``harbor`` image has an empty ``raw_4``
(dropped by the loader: 4 references). Run from anywhere:
``python tests/data/nwpu_captions/data.py``.
"""

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).parent
SIZE = 16
CLASSES = ("airplane", "harbor")
SPLITS = ("train", "val", "test")
KEYS = ("raw", "raw_1", "raw_2", "raw_3", "raw_4")

shutil.rmtree(ROOT / "NWPU_images", ignore_errors=True)
rng = np.random.default_rng(0)
data, imgid = {}, 0
for label in CLASSES:
    (ROOT / "NWPU_images" / label).mkdir(parents=True)
    entries = []
    for n, split in enumerate(SPLITS, start=1):
        filename = f"{label}_{n:03d}.jpg"
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(ROOT / "NWPU_images" / label / filename, quality=75)
        entry = {
            "filename": filename,
            "split": split,
            "imgid": imgid,
            "sentids": list(range(5 * imgid, 5 * imgid + 5)),
        }
        entry |= {key: f"{label} picture {n} , sentence {k} ." for k, key in enumerate(KEYS)}
        if label == "harbor" and split == "test":
            entry["raw_4"] = ""
        entries.append(entry)
        imgid += 1
    data[label] = entries
(ROOT / "dataset_nwpu.json").write_text(json.dumps(data))
