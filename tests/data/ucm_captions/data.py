#!/usr/bin/env python3
"""Write a tiny fake UCM-Captions in its on-disk layout.

``dataset.json`` in the Karpathy caption format (``{"images": [{"filename", "imgid", "split",
"sentences": [{"raw", "tokens", "imgid", "sentid"}] * 5, "sentids"}], "dataset": "ucm"}``)
and ``imgs/<imgid + 1>.tif`` (16x16 RGB TIFF, the real ones are 256 px). Splits: 3 train,
1 val, 2 test images. Caption k of image i is ``"there is a <scene> number <k + 1> ."``.
Run from anywhere: ``python tests/data/ucm_captions/data.py``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.data.fakes import write_karpathy_captions  # noqa: E402

SCENES = ("farmland", "beach", "forest", "harbor", "river", "runway")

write_karpathy_captions(
    Path(__file__).parent,
    json_name="dataset.json",
    dataset="ucm",
    image_dir="imgs",
    size=16,
    filenames=[f"{i + 1}.tif" for i in range(len(SCENES))],
    splits=("train", "train", "train", "val", "test", "test"),
    caption=lambda i, k: f"there is a {SCENES[i]} number {k + 1} .",
)
