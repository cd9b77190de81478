#!/usr/bin/env python3
"""Write tiny fake scene benchmarks in SkyScript's benchmark layout (AID, fMoW, Million-AID,
RSI-CB256): ``<name>/classnames.txt``, ``<name>/<table>.csv`` (filepath,title,label) and 8×8
PNGs under ``<name>/images/<class>/``, four per class. Each image is uniform, its colour a
function of the class index (red = 60 * index, green = 120, blue = 255 - 60 * index).
Run from anywhere: ``python tests/data/scene_benchmarks/data.py``. (The other benchmarks of
the suite are written by their tests into temporary folders, with the same writer.)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.data.fakes import write_scene_table  # noqa: E402

ROOT = Path(__file__).parent
#: folder, table, a few of the real class names (the layout is real; the class list is cut).
DATASETS = {
    "aid": ("aid_img_txt_pairs_test.csv", ["airport", "bare land", "baseball field"]),
    "fmow": ("fmow_img_txt_pairs_val.csv", ["airport", "amusement park", "aquaculture"]),
    "millionaid": ("img_txt_pairs_train.csv", ["apron", "bare land", "baseball field"]),
    "rsicb256": ("img_txt_pairs_train.csv", ["airplane", "airport runway", "artificial grassland"]),
}

if __name__ == "__main__":
    for name, (table, classes) in DATASETS.items():
        write_scene_table(ROOT, name, table, classes)
