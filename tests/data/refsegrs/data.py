#!/usr/bin/env python3
"""Write a tiny fake RefSegRS (run from this folder; deterministic).

images/<id>.tif                        32×32 RGB images (the real ones are 512×512)
masks/<id>.tif                         32×32 binary masks, 0 / 255
output_phrase_{train,val,test}.txt     one "<id> <expression>" per line
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
# split -> [(id, expression, (row0, row1, col0, col1))]
SPLITS = {
    "train": [
        ("11", "vehicle in the parking area", (4, 12, 6, 20)),
        ("12", "road along the buildings", (14, 18, 0, 32)),
        ("13", "white vehicle on the road", (20, 26, 2, 9)),
    ],
    "val": [
        ("21", "building near the road", (2, 16, 2, 16)),
        ("22", "long lane marking", (16, 18, 4, 30)),
    ],
    "test": [
        ("31", "car in the parking lot", (8, 14, 8, 14)),
        ("32", "sidewalk next to the road", (26, 30, 0, 24)),
    ],
}


def main() -> None:
    rng = np.random.default_rng(0)
    root = Path(__file__).parent
    for folder in ("images", "masks"):
        (root / folder).mkdir(exist_ok=True)
    for split, entries in SPLITS.items():
        lines = []
        for image_id, expression, (r0, r1, c0, c1) in entries:
            mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
            mask[r0:r1, c0:c1] = 255
            pixels = rng.integers(30, 100, (SIZE, SIZE, 3)).astype(np.uint8)
            pixels[mask == 255] = (220, 210, 40)
            Image.fromarray(pixels).save(root / "images" / f"{image_id}.tif")
            Image.fromarray(mask).save(root / "masks" / f"{image_id}.tif")
            lines.append(f"{image_id} {expression}\n")
        (root / f"output_phrase_{split}.txt").write_text("".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
