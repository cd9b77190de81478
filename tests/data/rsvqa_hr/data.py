#!/usr/bin/env python3
"""Write a tiny fake RSVQA-HR in the layout of its Zenodo record.

Per split (train, val, test, test_phili) ``USGS_split_{split}_{questions,answers,images}.json``:
``{"questions": [{"id", "date_added", "img_id", "people_id", "type", "question",
"answers_ids", "active"}]}``, ``{"answers": [{"id", "date_added", "question_id", "people_id",
"answer", "active"}]}``, ``{"images": [{"id", "date_added", "people_id", "questions_ids",
"active", ...}]}``; images ``Data/{id}.tif`` (24x24 RGB TIFF, the real ones are 512 px).

Ids are global and every split file lists everything, ``active`` only for the split's own
entries. Images 0-1 are train, 2 val, 3 test, 4 test_phili; each has one question of each type
(count, presence, comp, area). Area answers are the real binned strings (``"0m2"``,
``"between 10m2 and 100m2"``). Run from anywhere: ``python tests/data/rsvqa_hr/data.py``.
"""

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).parent
SIZE = 24
IMAGE_SPLITS = ("train", "train", "val", "test", "test_phili")
AREAS = ("0m2", "between 0m2 and 10m2", "between 10m2 and 100m2", "between 100m2 and 1000m2",
         "more than 1000m2")
QUESTIONS = (  # (type, question, answer) per image, formatted with the image id
    ("count", "How many residential buildings are there in tile {i}?", "{count}"),
    ("presence", "Is there a parking in tile {i}?", "{yes}"),
    ("comp", "Is the number of roads equal to the number of buildings in tile {i}?", "yes"),
    ("area", "What is the area covered by grass in tile {i}?", "{area}"),
)

shutil.rmtree(ROOT / "Data", ignore_errors=True)
(ROOT / "Data").mkdir()
rng = np.random.default_rng(0)
images, questions, answers = [], [], []
for i, image_split in enumerate(IMAGE_SPLITS):
    pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(ROOT / "Data" / f"{i}.tif")
    values = {"i": i, "count": str(2 * i), "yes": "yes" if i % 2 else "no", "area": AREAS[i]}
    ids = []
    for qtype, question, answer in QUESTIONS:
        q = len(questions)
        questions.append({"id": q, "date_added": 1.5e9, "img_id": i, "people_id": 0,
                          "type": qtype, "question": question.format(**values),
                          "answers_ids": [q], "split": image_split})
        answers.append({"id": q, "date_added": 1.5e9, "question_id": q, "people_id": 0,
                        "answer": answer.format(**values), "split": image_split})
        ids.append(q)
    images.append({"id": i, "date_added": 1.5e9, "people_id": 0, "original_name": f"usgs_{i}",
                   "sensor": "USGS", "questions_ids": ids, "split": image_split})

for split in ("train", "val", "test", "test_phili"):
    def active(entries, split=split):
        return [{k: v for k, v in e.items() if k != "split"} | {"active": e["split"] == split}
                for e in entries]
    for key, entries in (("questions", questions), ("answers", answers), ("images", images)):
        (ROOT / f"USGS_split_{split}_{key}.json").write_text(json.dumps({key: active(entries)}))
