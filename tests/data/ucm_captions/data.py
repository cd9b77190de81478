#!/usr/bin/env python3
"""Write a tiny fake UCM-Captions in its on-disk layout.

``dataset.json`` in the Karpathy caption format (``{"images": [{"filename", "imgid", "split",
"sentences": [{"raw", "tokens", "imgid", "sentid"}] * 5, "sentids"}], "dataset": "ucm"}``)
and ``imgs/<imgid + 1>.tif`` (16x16 RGB TIFF, the real ones are 256 px). Splits: 3 train,
1 val, 2 test images. Caption k of image i is ``"there is a <scene> number <k + 1> ."``.
Run from anywhere: ``python tests/data/ucm_captions/data.py``.
"""

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).parent
SIZE = 16
SCENES = ("farmland", "beach", "forest", "harbor", "river", "runway")
SPLITS = ("train", "train", "train", "val", "test", "test")

shutil.rmtree(ROOT / "imgs", ignore_errors=True)
(ROOT / "imgs").mkdir()
rng = np.random.default_rng(0)
images, sentid = [], 0
for i, (scene, split) in enumerate(zip(SCENES, SPLITS, strict=True)):
    filename = f"{i + 1}.tif"
    pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(ROOT / "imgs" / filename)
    sentences = []
    for k in range(5):
        raw = f"there is a {scene} number {k + 1} ."
        sentences.append({"tokens": raw.replace(" .", "").split(), "raw": raw, "imgid": i,
                          "sentid": sentid})
        sentid += 1
    images.append({"sentids": [s["sentid"] for s in sentences], "imgid": i, "sentences": sentences,
                   "split": split, "filename": filename})
(ROOT / "dataset.json").write_text(json.dumps({"images": images, "dataset": "ucm"}))
