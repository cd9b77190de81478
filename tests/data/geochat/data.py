#!/usr/bin/env python3
"""Write a tiny fake GeoChat-Instruct in its on-disk layout.

``GeoChat_Instruct.json``: a JSON list of LLaVA records ``{"id", "image", "conversations":
[{"from": "human"|"gpt", "value"}]}`` with GeoChat's variants: the ``<image>`` placeholder at
the end of the first question or before a task tag (``[refer]``, ``[grounding]``,
``[identify]``), multi-turn conversations, an ``image`` without extension, one record whose
roles are capitalized, and one image path with a sub-folder (LLaVA's ``coco/train2017/...``
form). Images in ``final_images_llava/`` (the folder ``images.zip`` unpacks to, under
``share/softwares/kartik/GeoChat_finetuning/``), 16x16 RGB. Run from anywhere:
``python tests/data/geochat/data.py``.
"""

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).parent
SIZE = 16
FILES = ("P0001_0001.png", "P0002_0003.jpg", "00451.png", "0007.png", "floodnet/7292.jpg")

RECORDS = [
    {
        "id": "P0001_0001",
        "image": "P0001_0001.png",
        "conversations": [
            {
                "from": "human",
                "value": "[refer] give me the location of <p>the large white ship</p>\n<image>",
            },
            {"from": "gpt", "value": "<p>the large white ship</p>{<10><22><31><40>|<0>}"},
        ],
    },
    {
        "id": "P0002_0003",
        "image": "P0002_0003",
        "conversations": [  # no extension: a .jpg
            {"from": "human", "value": "What is the main land use in this image?\n<image>"},
            {"from": "gpt", "value": "The image mainly shows residential buildings."},
            {"from": "human", "value": "How many ships are in the image?"},
            {"from": "gpt", "value": "2"},
        ],
    },
    {
        "id": "00451",
        "image": "00451.png",
        "conversations": [
            {"from": "human", "value": "<image>\n[grounding] Describe the image in detail."},
            {"from": "gpt", "value": "A harbor with two <p>ships</p> {<1><2><3><4>|<0>} docked."},
        ],
    },
    {
        "id": 7,
        "image": "0007.png",
        "conversations": [
            {
                "from": "Human",
                "value": "[identify] What is the object at {<5><5><20><20>|<0>}? <image>",
            },
            {"from": "GPT", "value": "A storage tank."},
        ],
    },
    {
        "id": "flood_7292",
        "image": "floodnet/7292.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nIs the road flooded?"},
            {"from": "gpt", "value": "Yes"},
        ],
    },
]

shutil.rmtree(ROOT / "final_images_llava", ignore_errors=True)
rng = np.random.default_rng(0)
for name in FILES:
    path = ROOT / "final_images_llava" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
(ROOT / "GeoChat_Instruct.json").write_text(json.dumps(RECORDS, indent=1))
