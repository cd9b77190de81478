#!/usr/bin/env python3
"""Write a tiny fake RSICD in its on-disk layout.

``dataset_rsicd.json`` in the Karpathy caption format (``{"images": [{"filename", "imgid",
"split", "sentences": [{"raw", "tokens", "imgid", "sentid"}] * 5, "sentids"}], "dataset":
"rsicd"}``) and ``RSICD_images/<scene>_<n>.jpg`` (20x20 RGB JPEG, the real ones are 224 px).
Splits: 4 train, 2 val, 2 test images. Caption k of image i is
``"<k + 1> : a <scene> with many <thing> ."`` so the references are known. Run from anywhere:
``python tests/data/rsicd/data.py``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.data.fakes import write_karpathy_captions  # noqa: E402

SCENES = ("playground", "port", "farmland", "airport", "forest", "church", "bridge", "desert")
THINGS = ("trees", "ships", "fields", "planes", "trees", "buildings", "cars", "dunes")

write_karpathy_captions(
    Path(__file__).parent,
    json_name="dataset_rsicd.json",
    dataset="rsicd",
    image_dir="RSICD_images",
    size=20,
    quality=75,
    filenames=[f"{scene}_{i + 1}.jpg" for i, scene in enumerate(SCENES)],
    splits=("train", "train", "train", "train", "val", "val", "test", "test"),
    caption=lambda i, k: f"{k + 1} : a {SCENES[i]} with many {THINGS[i]} .",
)
