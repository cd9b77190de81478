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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.data.fakes import write_rsvqa  # noqa: E402

write_rsvqa(
    Path(__file__).parent,
    prefix="LR",
    image_dir="Images_LR",
    size=16,
    image_splits=("train", "train", "val", "test"),
    questions=(  # (type, question, answer) per image, formatted with values(i)
        ("count", "How many buildings are there in image {i}?", "{count}"),
        ("presence", "Is a road present in image {i}?", "{yes}"),
        ("comp", "Are there more water areas than buildings in image {i}?", "no"),
        ("rural_urban", "Is image {i} a rural or an urban area?", "{area}"),
    ),
    values=lambda i: {
        "i": i,
        "count": str(3 * i + 1),
        "yes": "yes" if i % 2 else "no",
        "area": "urban" if i % 2 else "rural",
    },
    image_fields=lambda i: {"original_name": f"tile_{i}", "sensor": "Sentinel-2"},
    # an inactive question on image 0: never loaded
    inactive=lambda i: [("presence", "Is this question inactive?", "yes")] if i == 0 else [],
)
