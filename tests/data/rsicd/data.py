#!/usr/bin/env python3
"""Write a tiny fake RSICD in its on-disk layout.

``dataset_rsicd.json`` in the Karpathy caption format (``{"images": [{"filename", "imgid",
"split", "sentences": [{"raw", "tokens", "imgid", "sentid"}] * 5, "sentids"}], "dataset":
"rsicd"}``) and ``RSICD_images/<scene>_<n>.jpg`` (20x20 RGB JPEG, the real ones are 224 px).
Splits: 4 train, 2 val, 2 test images. Caption k of image i is
``"<k + 1> : a <scene> with many <thing> ."`` so the references are known. Run from anywhere:
``python tests/data/rsicd/data.py``.
"""

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).parent
SIZE = 20
SCENES = ("playground", "port", "farmland", "airport", "forest", "church", "bridge", "desert")
THINGS = ("trees", "ships", "fields", "planes", "trees", "buildings", "cars", "dunes")
SPLITS = ("train", "train", "train", "train", "val", "val", "test", "test")

shutil.rmtree(ROOT / "RSICD_images", ignore_errors=True)
(ROOT / "RSICD_images").mkdir()
rng = np.random.default_rng(0)
images, sentid = [], 0
for i, (scene, thing, split) in enumerate(zip(SCENES, THINGS, SPLITS, strict=True)):
    filename = f"{scene}_{i + 1}.jpg"
    pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(ROOT / "RSICD_images" / filename, quality=75)
    sentences = []
    for k in range(5):
        raw = f"{k + 1} : a {scene} with many {thing} ."
        sentences.append({"tokens": raw.replace(" .", "").split(), "raw": raw, "imgid": i,
                          "sentid": sentid})
        sentid += 1
    images.append({"sentids": [s["sentid"] for s in sentences], "imgid": i, "sentences": sentences,
                   "split": split, "filename": filename})
(ROOT / "dataset_rsicd.json").write_text(json.dumps({"images": images, "dataset": "rsicd"}))
