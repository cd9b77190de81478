"""The user's own image folder: rasters read as geodata (``zoo.data.rasters``, ``zoo.data.images``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.warp import transform_bounds
from rasterio.windows import Window as RioWindow
from rasterio.windows import bounds as window_bounds
from shapely.geometry import shape

from tests.geotiffs import UTM_CRS, write_utm_geotiff
from zoo.data.images import ImageFolderDataModule, ImageFolderDataset
from zoo.data.rasters import Window, chip_windows, read_raster, stitch, stretch


def test_chip_windows_cover_with_overlap_and_end_at_the_edge():
    windows = chip_windows(100, 150, 64, overlap=8)
    assert [w.col for w in windows[:3]] == [0, 56, 86] and {w.row for w in windows} == {0, 36}
    covered = np.zeros((100, 150), dtype=int)
    for w in windows:
        assert w.height == w.width == 64
        covered[w.row : w.row + 64, w.col : w.col + 64] += 1
    assert covered.min() >= 1
    assert chip_windows(40, 50, 64) == [Window(0, 0, 40, 50)]  # small: one window, itself
    with pytest.raises(ValueError, match="overlap"):
        chip_windows(10, 10, 8, overlap=8)


def test_stitch_averages_overlaps_and_restores_the_raster():
    full = np.random.default_rng(0).random((2, 50, 70)).astype(np.float32)
    windows = chip_windows(50, 70, 32, overlap=12)
    chips = [full[:, w.row : w.row + w.height, w.col : w.col + w.width] for w in windows]
    assert np.allclose(stitch(chips, windows, 50, 70), full)
    # Two chips disagree on their overlap: the mean.
    w = [Window(0, 0, 4, 4), Window(0, 2, 4, 4)]
    out = stitch([np.ones((1, 4, 4)), np.zeros((1, 4, 4))], w, 4, 6)
    assert np.allclose(out[0, 0], [1, 1, 0.5, 0.5, 0, 0])


def test_percentile_stretch_per_band_over_valid_pixels():
    values = np.stack(
        [np.arange(100.0).reshape(10, 10), 1000 + 10 * np.arange(100.0).reshape(10, 10)]
    )
    valid = np.ones((10, 10), dtype=bool)
    valid[0, 0] = False
    out = stretch(values, valid, (0.0, 100.0))
    assert out.min() == 0 and out.max() == 255  # each band spans the range on its own
    assert np.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="percentiles"):
        stretch(values, valid, (50.0, 10.0))


def test_read_raster_bands_nodata_and_crs(tmp_path: Path):
    path = write_utm_geotiff(tmp_path / "s2.tif", nodata_corner=8)
    raster = read_raster(path, bands=[3, 2, 1])
    assert raster.pixels.shape == (3, 96, 160) and raster.pixels.dtype == np.float32
    assert 0 <= raster.pixels.min() and raster.pixels.max() == 255
    assert not raster.valid[:8, :8].any() and raster.valid[8:, 8:].all()
    assert (raster.pixels[:, :8, :8] == 0).all()
    assert rasterio.crs.CRS.from_wkt(raster.crs) == rasterio.crs.CRS.from_string(UTM_CRS)
    with pytest.raises(ValueError, match=r"bands \[5\] do not exist"):
        read_raster(path, bands=[5, 2, 1])


def test_a_one_band_image_needs_bands(tmp_path: Path):
    path = write_utm_geotiff(tmp_path / "pan.tif", bands=1)
    with pytest.raises(ValueError, match=r"has 1 band\(s\): set bands"):
        read_raster(path)
    assert read_raster(path, bands=[1, 1, 1]).pixels.shape[0] == 3


def test_folder_samples_carry_crs_transform_footprint_and_location(tmp_path: Path):
    root = tmp_path / "images"
    path = write_utm_geotiff(root / "scenes" / "s2.tif")
    Image.fromarray(np.full((40, 30, 3), 90, dtype=np.uint8)).save(root / "photo.png")
    ds = ImageFolderDataset(root, image_size=32, bands=None, chip_size=64, overlap=16)
    chips = chip_windows(96, 160, 64, 16)
    assert len(ds) == 1 + len(chips)  # the PNG is one chip
    assert [Path(f).name for f in ds.files] == ["photo.png", "s2.tif"]
    plain = ds[0]
    assert plain["geo"] is None and "location" not in plain and plain["image"].shape == (3, 32, 32)
    with rasterio.open(path) as src:
        for k, w in enumerate(chips):
            sample = ds[1 + k]
            assert sample["path"] == "scenes/s2.tif" and sample["chip"]["window"] == w.as_list()
            expected = transform_bounds(
                src.crs,
                "EPSG:4326",
                *window_bounds(RioWindow(w.col, w.row, w.width, w.height), src.transform),
            )
            assert np.allclose(shape(sample["geo"]["footprint"]).bounds, expected, atol=1e-6)
            lat, lon = sample["location"].tolist()
            assert expected[1] < lat < expected[3] and expected[0] < lon < expected[2]
            # The transform maps the 32-pixel model grid onto the 64-pixel window.
            a, b, c, d, e, f = sample["geo"]["transform"]
            assert np.isclose(a, 20.0) and np.isclose(e, -20.0)
            assert np.allclose((c, f), src.transform @ (w.col, w.row))


def test_prompts_from_config_and_csv(tmp_path: Path):
    root = tmp_path / "images"
    for name in ("a.tif", "b.tif"):
        write_utm_geotiff(root / name, height=32, width=32)
    pd.DataFrame({"path": ["b.tif"], "prompt": ["Please segment the ship."]}).to_csv(
        root / "p.csv", index=False
    )
    dm = ImageFolderDataModule(
        root=str(root),
        task="referring",
        prompt="Please segment the road.",
        prompts_file="p.csv",
        image_size=32,
        batch_size=2,
    )
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["question"] == ["Please segment the road.", "Please segment the ship."]
    assert batch["location"].shape == (2, 2) and batch["image"].shape == (2, 3, 32, 32)
    assert len(batch["geo"]) == 2 and batch["path"] == ["a.tif", "b.tif"]
    assert (batch["mask_valid"] == 0).all() and batch["target_index"].numel() == 0
    pd.DataFrame({"path": ["c.tif"], "prompt": ["x"]}).to_csv(root / "bad.csv", index=False)
    with pytest.raises(ValueError, match="not under"):
        ImageFolderDataset(root, 32, prompts_file="bad.csv")


@pytest.mark.parametrize("task", ["image_text", "conversation"])
def test_tasks_batch_for_their_models(tmp_path: Path, task: str):
    write_utm_geotiff(tmp_path / "a.tif", height=40, width=40)
    dm = ImageFolderDataModule(root=str(tmp_path), task=task, image_size=32, batch_size=4)
    dm.setup("predict")
    batch = dm.on_after_batch_transfer(next(iter(dm.predict_dataloader())), 0)
    key = "input_ids" if task == "image_text" else "prompt_ids"
    assert len(dm.predict_dataset) == 4  # 40 px in 32 px chips: 2 x 2
    assert batch[key].shape[0] == 4 and torch.isfinite(batch["image"]).all()
    with pytest.raises(ValueError, match="images only, no labels"):
        dm.setup("fit")


def test_missing_or_empty_folder_is_explained(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope", 32)
    with pytest.raises(FileNotFoundError, match="holds no image files"):
        ImageFolderDataset(tmp_path, 32)
