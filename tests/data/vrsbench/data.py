#!/usr/bin/env python3
"""Write a tiny fake VRSBench in its on-disk layout.

* ``VRSBench_train.json``: a JSON list of LLaVA records ``{"id", "image", "conversations"}``
  whose question starts with a task tag: ``[caption]``, ``[vqa]`` (with the record's ``type``)
  or ``[refer]``;
* ``VRSBench_EVAL_vqa.json``: a JSON list of ``{"image_id", "question", "ground_truth",
  "dataset", "question_id", "type"}``;
* ``VRSBench_EVAL_Cap.json``: the same with ``"type": "caption"`` and the question
  ``"Describe the image in detail"``;
* images (16x16 RGB PNG, the real ones are 512 px) of ``Images_train.zip`` and
  ``Images_val.zip`` unpacked together into ``images/``.

Run from anywhere: ``python tests/data/vrsbench/data.py``.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.data.fakes import write_random_images  # noqa: E402

ROOT = Path(__file__).parent
SIZE = 16
TRAIN = ("P0003_0004.png", "P0005_0000.png", "00012.png")
VAL = ("P0100_0001.png", "P0101_0002.png")

write_random_images(ROOT / "images", TRAIN + VAL, SIZE)

train = [
    {
        "id": 0,
        "image": TRAIN[0],
        "conversations": [
            {
                "from": "human",
                "value": "<image>\n[caption] Could you describe the contents of this image for me?",
            },
            {
                "from": "gpt",
                "value": "The image shows a port with three white ships moored at a pier.",
            },
        ],
    },
    {
        "id": 1,
        "image": TRAIN[1],
        "type": "object color",
        "conversations": [
            {
                "from": "human",
                "value": "<image>\n[vqa] What color is the largest ship? A short answer to the question is",
            },
            {"from": "gpt", "value": "White"},
        ],
    },
    {
        "id": 2,
        "image": TRAIN[2],
        "conversations": [
            {"from": "human", "value": "<image>\n[refer] The small vehicle at the top left."},
            {"from": "gpt", "value": "{<2><3><10><12>}"},
        ],
    },
]
(ROOT / "VRSBench_train.json").write_text(json.dumps(train, indent=1))

vqa = [
    {
        "image_id": VAL[0],
        "question": "Is there a ship in the image?",
        "ground_truth": "Yes",
        "dataset": "RSBench",
        "question_id": 0,
        "type": "object existence",
    },
    {
        "image_id": VAL[0],
        "question": "How many ships are there?",
        "ground_truth": "2",
        "dataset": "RSBench",
        "question_id": 1,
        "type": "object quantity",
    },
    {
        "image_id": VAL[1],
        "question": "What is the scene type?",
        "ground_truth": "Harbor",
        "dataset": "RSBench",
        "question_id": 2,
        "type": "scene type",
    },
]
(ROOT / "VRSBench_EVAL_vqa.json").write_text(json.dumps(vqa, indent=4))
captions = [
    {
        "image_id": name,
        "ground_truth": f"A detailed caption of image {i}.",
        "question": "Describe the image in detail",
        "dataset": "RSBench",
        "question_id": i,
        "type": "caption",
    }
    for i, name in enumerate(VAL)
]
(ROOT / "VRSBench_EVAL_Cap.json").write_text(json.dumps(captions, indent=4))
