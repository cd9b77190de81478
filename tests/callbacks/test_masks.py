"""Tests of the mask prediction writer (``zoo.callbacks.masks``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shapely.geometry import shape

from zoo.callbacks.masks import METRES_PER_DEGREE, MaskPredictionWriter


def square_mask() -> torch.Tensor:
    mask = torch.zeros(10, 10, dtype=torch.uint8)
    mask[2:6, 3:8] = 1  # rows 2..5, columns 3..7: pixel edges at x 3 and 8, y 2 and 6
    return mask


def item(geo: dict | None, masks: torch.Tensor) -> dict:
    return {
        "id": "train_00001", "question": "Please segment the ship.", "answer": "Sure, ...",
        "reference": "Sure, the ship is ...", "masks": masks, "geo": geo, "category": [4, 0],
    }  # fmt: skip


def test_png_roundtrip_and_answer(tmp_path: Path):
    masks = torch.stack([square_mask().bool(), torch.zeros(10, 10, dtype=torch.bool)])
    writer = MaskPredictionWriter(str(tmp_path / "out"))
    writer.write_on_batch_end(None, None, [item(None, masks)], None, None, 0, 0)
    folder = tmp_path / "out" / "train_00001"
    for k in range(2):
        png = np.array(Image.open(folder / f"mask_{k}.png"))
        assert png.dtype == np.uint8 and set(np.unique(png)) <= {0, 255}
        assert np.array_equal(png == 255, masks[k].numpy())
    answer = json.loads((folder / "answer.json").read_text())
    assert answer["answer"] == "Sure, ..." and answer["masks"] == ["mask_0.png", "mask_1.png"]
    assert not (folder / "masks.geojson").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files


@pytest.mark.parametrize("lat", [0.0, 60.0])
def test_geojson_square(tmp_path: Path, lat: float):
    dlat = 0.01
    dlon = 0.01 if lat == 0.0 else 0.02  # 1 / cos(60°) = 2
    lon = 10.0
    masks = torch.stack([square_mask(), torch.zeros(10, 10, dtype=torch.uint8)])
    geo = {"lat": lat, "lon": lon, "gsd_m": dlat * METRES_PER_DEGREE}
    MaskPredictionWriter(str(tmp_path)).write(item(geo, masks))
    collection = json.loads((tmp_path / "train_00001" / "masks.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    first, second = collection["features"]
    assert first["properties"] == {"target": 0, "category": 4}
    assert second["geometry"] is None and second["properties"] == {"target": 1, "category": 0}
    polygon = shape(first["geometry"])
    assert polygon.is_valid and polygon.geom_type == "Polygon"
    # The image centre (pixel 5, 5) is at (lat, lon); x grows east, y grows south.
    west, east = lon + (3 - 5) * dlon, lon + (8 - 5) * dlon
    north, south = lat - (2 - 5) * dlat, lat - (6 - 5) * dlat
    assert polygon.bounds == pytest.approx((west, south, east, north))
    assert polygon.area == pytest.approx((east - west) * (north - south))
    corners = {tuple(np.round(c, 9)) for c in polygon.exterior.coords}
    expected = {(x, y) for x in (west, east) for y in (south, north)}
    assert corners == {tuple(np.round(c, 9)) for c in expected}


def test_two_regions_make_a_multipolygon(tmp_path: Path):
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, :2, :2] = mask[0, 5:, 5:] = True
    geo = {"lat": 45.0, "lon": 7.0, "gsd_m": 10.0}
    MaskPredictionWriter(str(tmp_path)).write(item(geo, mask) | {"category": None})
    feature = json.loads((tmp_path / "train_00001" / "masks.geojson").read_text())["features"][0]
    geometry = shape(feature["geometry"])
    assert geometry.geom_type == "MultiPolygon" and geometry.is_valid and len(geometry.geoms) == 2
    assert feature["properties"] == {"target": 0}
