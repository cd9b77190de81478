#!/usr/bin/env python3
"""Write a tiny fake RSVQA-LR in the layout of its Zenodo record.

Per split ``LR_split_{split}_{questions,answers,images}.json``:
``{"questions": [{"id", "date_added", "img_id", "people_id", "type", "question",
"answers_ids", "active"}]}``, ``{"answers": [{"id", "date_added", "question_id", "people_id",
"answer", "active"}]}``, ``{"images": [{"id", "date_added", "people_id", "questions_ids",
"active", ...}]}``; images ``Images_LR/{id}.tif`` (16x16 RGB TIFF, the real ones are 256 px).

As in the real files, ids are global and every split file lists every image, question and
answer, with ``active`` true only for those of the split. Images 0-1 are train, 2 val, 3 test;
each image has one question of each type (count, presence, comp, rural_urban), plus one
inactive question on image 0. Count answers are numbers (``"3"``). Run from anywhere:
``python tests/data/rsvqa_lr/data.py``.
"""

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).parent
SIZE = 16
IMAGE_SPLITS = ("train", "train", "val", "test")
QUESTIONS = (  # (type, question, answer) per image, formatted with the image id
    ("count", "How many buildings are there in image {i}?", "{count}"),
    ("presence", "Is a road present in image {i}?", "{yes}"),
    ("comp", "Are there more water areas than buildings in image {i}?", "no"),
    ("rural_urban", "Is image {i} a rural or an urban area?", "{area}"),
)

shutil.rmtree(ROOT / "Images_LR", ignore_errors=True)
(ROOT / "Images_LR").mkdir()
rng = np.random.default_rng(0)
images, questions, answers = [], [], []
for i, image_split in enumerate(IMAGE_SPLITS):
    pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(ROOT / "Images_LR" / f"{i}.tif")
    values = {"i": i, "count": str(3 * i + 1), "yes": "yes" if i % 2 else "no",
              "area": "urban" if i % 2 else "rural"}
    ids = []
    for qtype, question, answer in QUESTIONS:
        q = len(questions)
        questions.append({"id": q, "date_added": 1.5e9, "img_id": i, "people_id": 0,
                          "type": qtype, "question": question.format(**values),
                          "answers_ids": [q], "split": image_split})
        answers.append({"id": q, "date_added": 1.5e9, "question_id": q, "people_id": 0,
                        "answer": answer.format(**values), "split": image_split})
        ids.append(q)
    if i == 0:  # an inactive question: never loaded
        q = len(questions)
        questions.append({"id": q, "date_added": 1.5e9, "img_id": i, "people_id": 0,
                          "type": "presence", "question": "Is this question inactive?",
                          "answers_ids": [q], "split": "none"})
        answers.append({"id": q, "date_added": 1.5e9, "question_id": q, "people_id": 0,
                        "answer": "yes", "split": "none"})
    images.append({"id": i, "date_added": 1.5e9, "people_id": 0, "original_name": f"tile_{i}",
                   "sensor": "Sentinel-2", "questions_ids": ids, "split": image_split})

for split in ("train", "val", "test"):
    def active(entries, split=split):
        return [{k: v for k, v in e.items() if k != "split"} | {"active": e["split"] == split}
                for e in entries]
    for key, entries in (("questions", questions), ("answers", answers), ("images", images)):
        (ROOT / f"LR_split_{split}_{key}.json").write_text(json.dumps({key: active(entries)}))
