#!/usr/bin/env python3
"""Write a tiny fake SkyScript in torchgeo's on-disk layout, plus a coordinates file.

Images ``images2/`` ... ``images7/`` (the six folders torchgeo checks; small JPEGs of varying
size named like the real ``w<OSM way id>_<country>_<n>.jpg``), the three caption CSVs
``SkyScript_{train_top30pct,val_5K,test_30K}_filtered_by_CLIP_openai.csv`` (columns ``filepath,
title,title_multi_objects,similarity_CLIP_openai`` as the real ones) and ``coordinates.csv``
(``filepath,lat,lon``, one row per image, in no particular order; SkyScript's CSVs have no
coordinates). Each image is a uniform colour of its subject. Run from anywhere:
``python tests/data/skyscript/data.py``.
"""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).parent
SPLITS = {
    "SkyScript_train_top30pct_filtered_by_CLIP_openai.csv": 8,
    "SkyScript_val_5K_filtered_by_CLIP_openai.csv": 4,
    "SkyScript_test_30K_filtered_by_CLIP_openai.csv": 4,
}
SUBJECTS = {  # subject: (colour, surroundings)
    "a forest": ((30, 110, 40), "next to a road"),
    "a lake": ((30, 60, 160), "surrounded by a forest"),
    "a parking lot": ((120, 120, 120), "next to a mall"),
    "a residential area": ((170, 120, 90), "with gardens"),
}
COUNTRIES = ("BR", "US", "FR", "KE")

rng = np.random.default_rng(0)
for k in range(2, 8):
    shutil.rmtree(ROOT / f"images{k}", ignore_errors=True)
    (ROOT / f"images{k}").mkdir()
coordinates = []
n = 0
for csv, count in SPLITS.items():
    rows = []
    for _ in range(count):
        subject = list(SUBJECTS)[n % len(SUBJECTS)]
        colour, surroundings = SUBJECTS[subject]
        filepath = f"images{2 + n % 6}/w{100000 + 7919 * n}_{COUNTRIES[n % 4]}_{n % 3 + 17}.jpg"
        height, width = (int(v) for v in rng.integers(12, 25, size=2))
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        pixels[...] = colour
        Image.fromarray(pixels).save(ROOT / filepath, quality=90)
        rows.append(
            {
                "filepath": filepath,
                "title": f"a satellite image of {subject}",
                "title_multi_objects": f"a satellite image of {subject}, {surroundings}",
                "similarity_CLIP_openai": round(0.2 + 0.01 * n, 2),
            }
        )
        lat, lon = round(-22.9 + 3.5 * n, 4), round(-43.2 + 10.0 * n, 4)
        coordinates.append({"filepath": filepath, "lat": lat, "lon": lon})
        n += 1
    pd.DataFrame(rows).to_csv(ROOT / csv, index=False)
order = rng.permutation(len(coordinates))
pd.DataFrame([coordinates[i] for i in order]).to_csv(ROOT / "coordinates.csv", index=False)
