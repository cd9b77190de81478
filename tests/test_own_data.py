"""A user's own GeoTIFFs end to end: GeoPix GeoJSON in EPSG:4326, `zoo embed` GeoParquet,
generator answers with footprints (the acceptance of docs/your-own-data.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
import yaml
from PIL import Image
from rasterio.warp import transform_bounds
from rasterio.windows import Window as RioWindow
from rasterio.windows import bounds as window_bounds
from shapely.geometry import shape
from transformers import LlamaForCausalLM

from tests.geotiffs import write_utm_geotiff
from zoo.data.images import ImageFolderDataModule
from zoo.data.rasters import chip_windows
from zoo.data.referring import seg_phrase
from zoo.main import main

ROOT = Path(__file__).parents[1]
IMAGES = str(ROOT / "configs" / "data" / "images.yaml")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["zoo"])
    root = tmp_path / "images"
    write_utm_geotiff(root / "s2.tif", nodata_corner=10)
    return root


def _override(tmp_path: Path, callback: dict, data: dict) -> str:
    path = tmp_path / "override.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "trainer": {"logger": False, "enable_progress_bar": False, "callbacks": [callback]},
                "data": {"init_args": data},
            }
        )
    )
    return str(path)


def _coordinates(geometry: dict) -> np.ndarray:
    rings = (
        geometry["coordinates"]
        if geometry["type"] == "Polygon"
        else [r for polygon in geometry["coordinates"] for r in polygon]
    )
    return np.concatenate([np.asarray(r) for r in rings])


def test_geopix_predict_writes_geojson_inside_the_utm_footprint(
    folder: Path, tmp_path: Path, monkeypatch
):
    tokenizer = ImageFolderDataModule(task="referring").tokenizer
    answer = tokenizer(f"sure, the building is {seg_phrase(2, 3)} [EOS]", add_special_tokens=False)

    def generate(self, inputs_embeds, attention_mask, **kwargs):  # the LLM answers with a phrase
        return torch.tensor(answer["input_ids"]).repeat(len(inputs_embeds), 1)

    monkeypatch.setattr(LlamaForCausalLM, "generate", generate)
    torch.manual_seed(0)
    Image.fromarray(np.full((40, 30, 3), 90, dtype=np.uint8)).save(folder / "photo.png")
    out = tmp_path / "out"
    writer = {
        "class_path": "zoo.callbacks.MaskPredictionWriter",
        "init_args": {"output_dir": str(out)},
    }
    override = _override(
        tmp_path, writer, {"root": str(folder), "task": "referring", "overlap": 16}
    )
    main(
        [
            "predict",
            "--config",
            str(ROOT / "configs/geopix.yaml"),
            "--config",
            IMAGES,
            "--config",
            override,
        ]
    )

    with rasterio.open(folder / "s2.tif") as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        height, width = src.shape
    collection = json.loads((out / "s2" / "masks.geojson").read_text())
    (feature,) = collection["features"]  # one phrase, stitched over the six chips
    assert feature["properties"] | {"target": 0} == {
        "target": 0,
        "category": "building",
        "phrase": "the building",
        "image": "s2.tif",
    }
    points = _coordinates(feature["geometry"])
    assert len(points) > 4 and np.ptp(points[:, 0]) > 0 and np.ptp(points[:, 1]) > 0
    assert (west <= points[:, 0]).all() and (points[:, 0] <= east).all()
    assert (south <= points[:, 1]).all() and (points[:, 1] <= north).all()
    mask = np.array(Image.open(out / "s2" / "mask_0.png")) > 0
    assert mask.shape == (height, width) and not mask[:10, :10].any()  # nodata stays empty
    # The polygons cover what the full-resolution mask covers (metres -> degrees at 45° N).
    area_deg = shape(feature["geometry"]).area
    pixel_deg = (10 / 111_320) * (10 / (111_320 * np.cos(np.radians(45.15))))
    assert area_deg / (mask.sum() * pixel_deg) == pytest.approx(1.0, rel=0.02)
    record = json.loads((out / "s2" / "answer.json").read_text())
    assert len(record["chips"]) == len(chip_windows(96, 160, 64, 16)) == 6
    assert json.loads((out / "photo" / "answer.json").read_text())["geojson"] is None
    merged = gpd.read_parquet(out / "masks.parquet")
    assert merged.crs.to_epsg() == 4326 and list(merged["image"]) == ["s2.tif"]
    assert merged.geometry.iloc[0].equals(shape(feature["geometry"]))


def test_zoo_embed_writes_one_geoparquet_row_per_chip(folder: Path, tmp_path: Path):
    output = tmp_path / "embeddings.parquet"
    main(
        [
            "embed",
            "--config",
            str(ROOT / "configs/flavars.yaml"),
            "--config",
            IMAGES,
            f"--data.init_args.root={folder}",
            "--data.init_args.overlap=16",
            "--output",
            str(output),
            "--no_progress",
        ]
    )
    frame = gpd.read_parquet(output)
    windows = chip_windows(96, 160, 64, 16)
    assert len(frame) == len(windows) and frame.crs.to_epsg() == 4326
    with rasterio.open(folder / "s2.tif") as src:
        for (_, row), w in zip(frame.iterrows(), windows, strict=True):
            assert list(row["window"]) == w.as_list() and row["path"] == "s2.tif"
            rio = RioWindow(w.col, w.row, w.width, w.height)
            expected = transform_bounds(src.crs, "EPSG:4326", *window_bounds(rio, src.transform))
            assert np.allclose(row.geometry.bounds, expected, atol=1e-6)
            assert row.geometry.contains(gpd.points_from_xy([row["lon"]], [row["lat"]])[0])
    image = np.stack(frame["image_embedding"].to_numpy())
    location = np.stack(frame["location_embedding"].to_numpy())
    assert image.shape == location.shape == (len(windows), 128)
    assert np.allclose(np.linalg.norm(image, axis=1), 1, atol=1e-5)
    assert frame["valid_fraction"].iloc[0] < 1 == frame["valid_fraction"].iloc[-1]


def test_aquila_predict_writes_answers_with_path_and_footprint(folder: Path, tmp_path: Path):
    output = tmp_path / "answers.jsonl"
    writer = {
        "class_path": "zoo.callbacks.PredictionWriter",
        "init_args": {"output_path": str(output)},
    }
    override = _override(tmp_path, writer, {"root": str(folder), "task": "conversation"})
    main(
        [
            "predict",
            "--config",
            str(ROOT / "configs/aquila.yaml"),
            "--config",
            IMAGES,
            "--config",
            override,
            "--model.init_args.generation.max_new_tokens=2",
        ]
    )
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == len(chip_windows(96, 160, 64))
    for row in rows:
        assert row["path"] == "s2.tif" and row["question"] == "Describe the image briefly."
        assert shape(row["footprint"]).is_valid and len(row["window"]) == 4
