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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.data.fakes import write_rsvqa  # noqa: E402

AREAS = (
    "0m2",
    "between 0m2 and 10m2",
    "between 10m2 and 100m2",
    "between 100m2 and 1000m2",
    "more than 1000m2",
)

write_rsvqa(
    Path(__file__).parent,
    prefix="USGS",
    image_dir="Data",
    size=24,
    image_splits=("train", "train", "val", "test", "test_phili"),
    questions=(  # (type, question, answer) per image, formatted with values(i)
        ("count", "How many residential buildings are there in tile {i}?", "{count}"),
        ("presence", "Is there a parking in tile {i}?", "{yes}"),
        ("comp", "Is the number of roads equal to the number of buildings in tile {i}?", "yes"),
        ("area", "What is the area covered by grass in tile {i}?", "{area}"),
    ),
    values=lambda i: {
        "i": i,
        "count": str(2 * i),
        "yes": "yes" if i % 2 else "no",
        "area": AREAS[i],
    },
    image_fields=lambda i: {"original_name": f"usgs_{i}", "sensor": "USGS"},
)
