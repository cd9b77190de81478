#!/usr/bin/env python3
"""Write a tiny fake Sydney-Captions in its on-disk layout.

``dataset.json`` in the Karpathy caption format (``{"images": [{"filename", "imgid", "split",
"sentences": [{"raw", "tokens", "imgid", "sentid"}] * 5, "sentids"}], "dataset": "sydney"}``)
and ``imgs/<imgid + 1>.tif`` (24x24 RGB TIFF, the real ones are 500 px). Splits: 3 train,
1 val, 1 test image. Caption k of image i is ``"a <scene> area seen from above , view
<k + 1> ."``. Run from anywhere: ``python tests/data/sydney_captions/data.py``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.data.fakes import write_karpathy_captions  # noqa: E402

SCENES = ("residential", "industrial", "ocean", "meadow", "airport")

write_karpathy_captions(
    Path(__file__).parent,
    json_name="dataset.json",
    dataset="sydney",
    image_dir="imgs",
    size=24,
    filenames=[f"{i + 1}.tif" for i in range(len(SCENES))],
    splits=("train", "train", "train", "val", "test"),
    caption=lambda i, k: f"a {SCENES[i]} area seen from above , view {k + 1} .",
)
