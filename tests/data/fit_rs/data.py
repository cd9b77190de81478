#!/usr/bin/env python3
"""Write a tiny fake FIT-RS (SkySenseGPT) in its on-disk layout.

* ``FIT-RS_Instruction/FIT-RS-train-1415k.json``: a JSON list of LLaVA records ``{"id",
  "image", "conversations"}`` (multi-turn, ``<image>`` at the end of the first question);
* ``FIT-RSFG/FIT-RSFG-Bench/test_FITRS_vqa_eval.jsonl``: JSON lines ``{"question_id",
  "image", "text", "category", "ground_truth"}`` (GeoChat's evaluation format);
* ``FIT-RSFG/FIT-RSFG-Bench/test_FITRS_complex_comprehension_eval.jsonl``: JSON lines
  ``{"question_id", "image", "category", "question", "ground_truth"}``;
* images in ``FIT-RS_Images/`` (16x16 RGB PNG, the real ones are 512 px).

Run from anywhere: ``python tests/data/fit_rs/data.py``.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.data.fakes import write_random_images  # noqa: E402

ROOT = Path(__file__).parent
SIZE = 16
TRAIN = ("P0003_0000.png", "P0003_0001.png", "P0004_0000.png")
TEST = ("P1000_0000.png", "P1000_0001.png", "P1001_0000.png")

write_random_images(ROOT / "FIT-RS_Images", TRAIN + TEST, SIZE)

train = []
for i, name in enumerate(TRAIN):
    train.append(
        {
            "id": f"{name[:-4]}_task{i}",
            "image": name,
            "conversations": [
                {"from": "human", "value": "How many small vehicles are in the image?\n<image>"},
                {"from": "gpt", "value": str(i + 2)},
                {
                    "from": "human",
                    "value": "What is the relationship between the ship and the dock?",
                },
                {"from": "gpt", "value": "The ship is docked alongside the dock."},
            ],
        }
    )
(ROOT / "FIT-RS_Instruction").mkdir(exist_ok=True)
(ROOT / "FIT-RS_Instruction" / "FIT-RS-train-1415k.json").write_text(json.dumps(train))

bench = ROOT / "FIT-RSFG" / "FIT-RSFG-Bench"
bench.mkdir(parents=True, exist_ok=True)
vqa = [
    {
        "question_id": 100 + i,
        "image": name,
        "category": category,
        "text": text,
        "ground_truth": answer,
    }
    for i, (name, category, text, answer) in enumerate(
        [
            (TEST[0], "presence", "Is there a harbor in the image?", "yes"),
            (TEST[1], "count", "How many airplanes are there?", "3"),
            (TEST[2], "presence", "Is there a bridge in the image?", "no"),
        ]
    )
]
(bench / "test_FITRS_vqa_eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in vqa))
complex_ = [
    {
        "question_id": 200,
        "image": TEST[0],
        "category": "task4",
        "question": "What is the relation between the ship and the harbor?",
        "ground_truth": "The ship is docked at the harbor.",
    },
]
(bench / "test_FITRS_complex_comprehension_eval.jsonl").write_text(
    "".join(json.dumps(r) + "\n" for r in complex_)
)
