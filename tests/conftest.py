"""Shared fixtures: a tiny image-caption-location table in SkyScript's CSV format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CLASSES = ["forest", "water"]


def write_table_dataset(root: Path, n: int = 8, size: int = 32, location: bool = True) -> Path:
    """Images whose colour follows the class, captions naming the class, one table per split."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        rows = []
        (root / "images").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            label = CLASSES[i % 2]
            colour = (20, 120, 30) if label == "forest" else (20, 40, 160)
            pixels = np.clip(rng.normal(colour, 10, (size, size, 3)), 0, 255).astype(np.uint8)
            path = f"images/{split}_{i}.png"
            Image.fromarray(pixels).save(root / path)
            row = {"filepath": path, "title": f"a satellite image of a {label}.", "label": label}
            if location:
                row |= {"lat": 10.0 * i - 40, "lon": 20.0 * i - 80}
            rows.append(row)
        pd.DataFrame(rows).to_csv(root / f"{split}.csv", index=False)
    return root


@pytest.fixture
def table_root(tmp_path: Path) -> Path:
    return write_table_dataset(tmp_path / "table")
