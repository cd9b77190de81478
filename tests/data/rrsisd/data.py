#!/usr/bin/env python3
"""Write a tiny fake RRSIS-D in the refer-API layout (run from this folder; deterministic).

rrsisd/refs(unc).p              pickled refs (protocol 2, as the refer API's files)
rrsisd/instances.json           COCO instances for all splits, RLE and polygon masks
images/rrsisd/JPEGImages/*.jpg  32×32 images (the real ones are 800×800)
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

SIZE = 32
CATEGORIES = [
    "airplane",
    "airport",
    "baseball field",
    "basketball court",
    "bridge",
    "chimney",
    "dam",
    "expressway service area",
    "expressway toll station",
    "golf field",
    "ground track field",
    "harbor",
    "overpass",
    "ship",
    "stadium",
    "storage tank",
    "tennis court",
    "train station",
    "vehicle",
    "windmill",
]
# (image id, split, category, kind, (row0, row1, col0, col1), [raw sentences])
OBJECTS = [
    (1, "train", "ship", "rle", (2, 10, 3, 13), ["The ship on the left of the harbor"]),
    (1, "train", "storage tank", "polygon", (14, 24, 16, 28), ["A round storage tank"]),
    (1, "train", "vehicle", "rle", (26, 30, 2, 8), ["the small vehicle at the bottom"]),
    (2, "train", "airplane", "polygon", (4, 20, 4, 20), ["The white airplane"]),
    (3, "val", "bridge", "rle", (10, 14, 0, 32), ["The bridge across the river", "a long bridge"]),
    (4, "val", "windmill", "rle", (5, 9, 20, 24), ["The windmill in the upper right"]),
    (5, "test", "dam", "rle", (0, 8, 0, 16), ["The dam at the top"]),
    (5, "test", "chimney", "polygon", (20, 28, 20, 26), ["the chimney on the right"]),
    (6, "test", "stadium", "rle", (8, 24, 8, 24), ["The stadium in the center"]),
]


def main() -> None:
    rng = np.random.default_rng(0)
    root = Path(__file__).parent
    image_dir = root / "images" / "rrsisd" / "JPEGImages"
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / "rrsisd").mkdir(exist_ok=True)
    ids = sorted({o[0] for o in OBJECTS})
    images = [{"id": i, "file_name": f"{i:05d}.jpg", "height": SIZE, "width": SIZE} for i in ids]
    pixels = {i: rng.integers(40, 90, (SIZE, SIZE, 3)).astype(np.uint8) for i in ids}
    annotations, refs, sent_id = [], [], 0
    for n, (image_id, split, category, kind, (r0, r1, c0, c1), raws) in enumerate(OBJECTS):
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
        mask[r0:r1, c0:c1] = 1
        pixels[image_id][mask == 1] = (200, 200 - 10 * n, 60 + 10 * n)
        if kind == "rle":
            rle = mask_utils.encode(np.asfortranarray(mask))
            segmentation = {"size": [SIZE, SIZE], "counts": rle["counts"].decode()}
        else:  # polygon corners in (x, y)
            segmentation = [[c0, r0, c1, r0, c1, r1, c0, r1]]
        category_id = CATEGORIES.index(category) + 1
        annotations.append(
            {
                "id": 100 + n,
                "image_id": image_id,
                "category_id": category_id,
                "iscrowd": 0,
                "segmentation": segmentation,
                "area": int(mask.sum()),
                "bbox": [c0, r0, c1 - c0, r1 - r0],
            }
        )
        sentences = []
        for raw in raws:
            tokens = raw.lower().split()
            sentences.append(
                {"raw": raw, "sent": " ".join(tokens), "sent_id": sent_id, "tokens": tokens}
            )
            sent_id += 1
        refs.append(
            {
                "ref_id": n,
                "ann_id": 100 + n,
                "image_id": image_id,
                "split": split,
                "category_id": category_id,
                "file_name": f"{image_id:05d}_{n}.jpg",
                "sentences": sentences,
                "sent_ids": [s["sent_id"] for s in sentences],
            }
        )
    for i in ids:
        Image.fromarray(pixels[i]).save(image_dir / f"{i:05d}.jpg", quality=90)
    categories = [{"id": k + 1, "name": c, "supercategory": c} for k, c in enumerate(CATEGORIES)]
    instances = {"images": images, "annotations": annotations, "categories": categories}
    (root / "rrsisd" / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    with (root / "rrsisd" / "refs(unc).p").open("wb") as file:
        pickle.dump(refs, file, protocol=2)


if __name__ == "__main__":
    main()
